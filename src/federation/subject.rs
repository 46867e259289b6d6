//! Bus names and topics as NATS subjects (docs/federation.md, "Subjects").
//!
//! A name's dots stay token separators, so that a pattern (`editor.*`)
//! becomes a NATS wildcard (`editor.>`). Inside a token, every byte that is
//! not an ASCII letter, digit, `_` or `-` is written `%XX` (two upper-case
//! hex digits): NATS's own wildcards `*` and `>`, `$`, and `%` itself never
//! appear raw. An empty token (`a..b`) is written `%`, which no escaped
//! byte can produce. The mapping is one to one.

/// The subject prefix of a cluster: `junction.CLUSTER` (CLUSTER escaped).
pub fn prefix(cluster: &str) -> String {
    let mut out = String::from("junction.");
    escape_token(cluster, &mut out);
    out
}

/// The subject a name is served on: `PREFIX.call.NAME`; a pattern's
/// (`editor.*`) is `PREFIX.call.editor.>`.
pub fn call(prefix: &str, name: &str) -> String {
    with(prefix, "call", name)
}

/// The subject an event on `topic` is published on: `PREFIX.event.TOPIC`.
pub fn event(prefix: &str, topic: &str) -> String {
    with(prefix, "event", topic)
}

fn with(prefix: &str, kind: &str, name: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + kind.len() + name.len() + 8);
    out.push_str(prefix);
    out.push('.');
    out.push_str(kind);
    out.push('.');
    escape(name, &mut out);
    out
}

/// Appends `name` (or a pattern ending in `.*`) escaped token by token.
pub fn escape(name: &str, out: &mut String) {
    let (body, wildcard) = match name.strip_suffix(".*") {
        Some(prefix) => (prefix, true),
        None => (name, false),
    };
    for (i, token) in body.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        escape_token(token, out);
    }
    if wildcard {
        out.push_str(".>");
    }
}

fn escape_token(token: &str, out: &mut String) {
    if token.is_empty() {
        out.push('%');
        return;
    }
    for byte in token.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 15)]));
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_subjects_one_to_one() {
        let p = prefix("prod");
        assert_eq!(p, "junction.prod");
        assert_eq!(call(&p, "editor.open"), "junction.prod.call.editor.open");
        assert_eq!(call(&p, "editor.*"), "junction.prod.call.editor.>");
        assert_eq!(call(&p, "a>b.c*d"), "junction.prod.call.a%3Eb.c%2Ad");
        assert_eq!(call(&p, "a..b"), "junction.prod.call.a.%.b");
        assert_eq!(call(&p, "x%"), "junction.prod.call.x%25");
        assert_eq!(call(&p, "$SYS.x"), "junction.prod.call.%24SYS.x");
        assert_eq!(event(&p, "été"), "junction.prod.event.%C3%A9t%C3%A9");
        assert_eq!(prefix("my cluster.x"), "junction.my%20cluster%2Ex");
        // Distinct names never share a subject.
        assert_ne!(call(&p, "a.%"), call(&p, "a."));
    }
}

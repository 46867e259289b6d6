//! `junction subscribe`, `junction publish` and `junction list`.

use std::io::{ErrorKind, Read, Write};

use junction::client::{BusList, Client, ClientError, Incoming, ProvidedName, Provider};
use serde_json::Value;

use crate::Failure;
use crate::reconnect::{self, Connect};

/// Subscribes to `topics` and prints each event as one JSON line, until
/// `count` events (if given), or the end of the connection when not
/// reconnecting (else it connects and subscribes again).
pub fn subscribe(
    connect: Connect<'_>,
    topics: &[String],
    count: Option<u64>,
    reconnect: bool,
    endpoint: &str,
) -> Result<(), Failure> {
    let setup = |client: &mut Client| -> Result<Vec<String>, ClientError> {
        let topics = client.subscribe(topics)?;
        client.set_timeout(None)?;
        Ok(topics)
    };
    let mut client = connect()?;
    let subscribed = setup(&mut client).map_err(crate::failure)?;
    eprintln!(
        "junction: subscribed to {} on {endpoint}",
        subscribed.join(", ")
    );
    let mut seen = 0u64;
    while count.is_none_or(|n| seen < n) {
        match next_event(&mut client)? {
            Ok(line) => {
                if !print(&line)? {
                    return Ok(());
                }
                seen += 1;
            }
            Err(lost) if reconnect => {
                eprintln!("junction: daemon gone ({lost}); reconnecting…");
                let (again, subscribed) = reconnect::again(connect, setup)?;
                client = again;
                eprintln!(
                    "junction: reconnected to {endpoint}; subscribed to {}",
                    subscribed.join(", ")
                );
            }
            Err(lost) => return Err(Failure::Connection(lost)),
        }
    }
    Ok(())
}

/// The next event as a JSON line, or how the connection ended.
fn next_event(client: &mut Client) -> Result<Result<String, String>, Failure> {
    loop {
        match client.next_message() {
            Ok(Incoming::Event(event)) => return Ok(Ok(event.to_line())),
            Ok(Incoming::Response(response)) => {
                // Only a connection error comes unasked: -32024, too slow.
                if let Err(e) = response.result {
                    return Err(Failure::Rpc(format!("error {}: {}", e.code, e.message)));
                }
            }
            Ok(_) => {}
            Err(e @ ClientError::Usage(_)) => return Err(crate::failure(e)),
            Err(e) => return Ok(Err(crate::provide::lost(e))),
        }
    }
}

/// Writes one event line; false when the reader went away (`| head -1`):
/// that is the end, not an error.
fn print(line: &str) -> Result<bool, Failure> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Failure::Connection(format!("cannot write an event: {e}"))),
    }
}

/// Publishes `data` (JSON text, `-` for stdin, None for null) on `topic`
/// and prints how many subscribers it reached.
pub fn publish(mut client: Client, topic: &str, data: Option<&str>) -> Result<(), Failure> {
    let data = parse_data(data)?;
    let reached = client.publish(topic, data).map_err(crate::failure)?;
    println!("{reached}");
    Ok(())
}

fn parse_data(data: Option<&str>) -> Result<Value, Failure> {
    let text = match data {
        None => return Ok(Value::Null),
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Failure::Usage(format!("cannot read DATA from stdin: {e}")))?;
            text
        }
        Some(text) => text.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| {
        Failure::Usage(format!(
            "DATA must be JSON ({e}); quote strings twice, e.g. '\"hi\"' or '{{\"a\":1}}'"
        ))
    })
}

/// Prints `bus.list`: who provides which name, and topics with their
/// subscriber counts.
pub fn list(mut client: Client) -> Result<(), Failure> {
    let BusList { names, topics } = client.bus_list().map_err(crate::failure)?;
    println!("{:<32} {:>7}  PROVIDER", "NAME", "PENDING");
    for name in &names {
        println!("{:<32} {:>7}  {}", name.name, name.pending, provider(name));
    }
    println!();
    println!("{:<32} {:>7}", "TOPIC", "SUBSCRIBERS");
    for topic in &topics {
        println!("{:<32} {:>7}", topic.topic, topic.subscribers);
    }
    Ok(())
}

/// `unix pid 4242 uid 1000 (connection 7, jsonrpc)`, `tcp 127.0.0.1:5555
/// (...)`, `daemon`, or `group of 2: ...; ...`.
fn provider(name: &ProvidedName) -> String {
    match &name.group {
        Some(members) => format!(
            "group of {}: {}",
            members.len(),
            members
                .iter()
                .map(|m| peer(&m.provider))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        None => peer(&name.provider),
    }
}

fn peer(provider: &Provider) -> String {
    let peer = match provider {
        Provider::Named(name) => return name.clone(),
        Provider::Connection(peer) => peer,
    };
    let mut text = peer.transport.clone();
    if let Some(address) = &peer.address {
        text.push_str(&format!(" {address}"));
    }
    if let Some(pid) = peer.pid {
        text.push_str(&format!(" pid {pid}"));
    }
    if let Some(uid) = peer.uid {
        text.push_str(&format!(" uid {uid}"));
    }
    format!("{text} (connection {}, {})", peer.id, peer.protocol)
}

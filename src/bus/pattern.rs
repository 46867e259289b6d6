//! Names, topics and prefix patterns (`editor.*`), and a table that finds
//! the owner of a name: an exact entry first, then the longest pattern.

use rustc_hash::FxHashMap as HashMap;
use std::fmt;

/// The longest name or topic (an MCP1 method name's limit).
pub const MAX_NAME: usize = 255;

/// A name (`editor.open`) or a prefix pattern (`editor.*`, kept as `editor.`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// Exactly this name.
    Exact(String),
    /// Every name that starts with this prefix (which ends with a dot) and is longer.
    Prefix(String),
}

impl Pattern {
    /// Parses a name or pattern, saying what is wrong with a bad one.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() || text.len() > MAX_NAME {
            return Err(format!("{text:?} must be 1 to {MAX_NAME} bytes long"));
        }
        if let Some(bad) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{text:?} contains {bad:?}: no whitespace or control characters"
            ));
        }
        match text.strip_suffix('*') {
            None if !text.contains('*') => Ok(Pattern::Exact(text.into())),
            Some(prefix) if prefix.ends_with('.') && prefix.len() > 1 && !prefix.contains('*') => {
                Ok(Pattern::Prefix(prefix.into()))
            }
            _ => Err(format!(
                "{text:?} is not a name or a pattern: `*` may only end a pattern, after a dot (e.g. \"editor.*\")"
            )),
        }
    }

    /// True when the name or pattern lies under `prefix` (e.g. `rpc.`).
    pub fn is_under(&self, prefix: &str) -> bool {
        self.text().starts_with(prefix)
    }

    /// The name, or the pattern's prefix (with its dot).
    pub fn text(&self) -> &str {
        match self {
            Pattern::Exact(name) | Pattern::Prefix(name) => name,
        }
    }

    /// True when `name` is this name or falls under this pattern.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(exact) => exact == name,
            Pattern::Prefix(prefix) => {
                name.len() > prefix.len() && name.starts_with(prefix.as_str())
            }
        }
    }

    /// True when every name `other` matches, this matches too.
    pub fn covers(&self, other: &Pattern) -> bool {
        match (self, other) {
            (Pattern::Exact(a), Pattern::Exact(b)) => a == b,
            (Pattern::Exact(_), Pattern::Prefix(_)) => false,
            (Pattern::Prefix(a), Pattern::Exact(b)) => {
                b.len() > a.len() && b.starts_with(a.as_str())
            }
            (Pattern::Prefix(a), Pattern::Prefix(b)) => b.starts_with(a.as_str()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(name) => f.write_str(name),
            Pattern::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// Names and patterns to values.
#[derive(Debug)]
pub struct PatternMap<T> {
    exact: HashMap<String, T>,
    prefixes: HashMap<String, T>,
}

impl<T> Default for PatternMap<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::default(),
            prefixes: HashMap::default(),
        }
    }
}

impl<T> PatternMap<T> {
    /// The value stored under exactly this name or pattern.
    pub fn get(&self, pattern: &Pattern) -> Option<&T> {
        match pattern {
            Pattern::Exact(name) => self.exact.get(name),
            Pattern::Prefix(prefix) => self.prefixes.get(prefix),
        }
    }

    /// The value under exactly this name or pattern, to change.
    pub fn get_mut(&mut self, pattern: &Pattern) -> Option<&mut T> {
        match pattern {
            Pattern::Exact(name) => self.exact.get_mut(name),
            Pattern::Prefix(prefix) => self.prefixes.get_mut(prefix),
        }
    }

    /// The value under this name or pattern, made with `make` if absent.
    pub fn entry(&mut self, pattern: &Pattern, make: impl FnOnce() -> T) -> &mut T {
        let (map, key) = match pattern {
            Pattern::Exact(name) => (&mut self.exact, name),
            Pattern::Prefix(prefix) => (&mut self.prefixes, prefix),
        };
        map.entry(key.clone()).or_insert_with(make)
    }

    /// Removes and returns the value under this name or pattern.
    pub fn remove(&mut self, pattern: &Pattern) -> Option<T> {
        match pattern {
            Pattern::Exact(name) => self.exact.remove(name),
            Pattern::Prefix(prefix) => self.prefixes.remove(prefix),
        }
    }

    /// The entry that owns `name`: its exact entry, else the pattern with
    /// the longest prefix that matches it.
    pub fn lookup(&self, name: &str) -> Option<&T> {
        if let Some(value) = self.exact.get(name) {
            return Some(value);
        }
        if self.prefixes.is_empty() {
            return None;
        }
        // Every prefix of the name that ends with a dot, longest first; the
        // prefix must leave at least one byte of the name after it.
        name[..name.len().saturating_sub(1)]
            .rmatch_indices('.')
            .find_map(|(dot, _)| self.prefixes.get(&name[..=dot]))
    }

    /// Every entry that matches `name`: its exact entry and every matching pattern.
    pub fn matching<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a T> + 'a {
        let prefixes = (!self.prefixes.is_empty())
            .then(|| {
                name[..name.len().saturating_sub(1)]
                    .match_indices('.')
                    .filter_map(|(dot, _)| self.prefixes.get(&name[..=dot]))
            })
            .into_iter()
            .flatten();
        self.exact.get(name).into_iter().chain(prefixes)
    }

    /// Every entry, with its name or pattern.
    pub fn iter(&self) -> impl Iterator<Item = (Pattern, &T)> {
        let exact = self
            .exact
            .iter()
            .map(|(k, v)| (Pattern::Exact(k.clone()), v));
        let prefixes = self
            .prefixes
            .iter()
            .map(|(k, v)| (Pattern::Prefix(k.clone()), v));
        exact.chain(prefixes)
    }

    /// Gives memory back when the table is mostly empty.
    pub fn shrink(&mut self) {
        for map in [&mut self.exact, &mut self.prefixes] {
            if map.capacity() > 4 * map.len() + 64 {
                map.shrink_to_fit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Pattern {
        Pattern::parse(text).expect("valid pattern")
    }

    #[test]
    fn names_and_patterns_parse_and_bad_ones_say_why() {
        assert_eq!(p("editor.open"), Pattern::Exact("editor.open".into()));
        assert_eq!(p("editor.*"), Pattern::Prefix("editor.".into()));
        assert_eq!(p("editor.*").to_string(), "editor.*");
        for bad in [
            "",
            "*",
            ".*",
            "editor*",
            "edi*tor.*",
            "a b",
            "tab\t",
            "x.*.*",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Pattern::parse(&"x".repeat(256)).is_err());
        assert!(Pattern::parse(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn lookup_takes_the_exact_name_then_the_longest_pattern() {
        let mut map = PatternMap::default();
        *map.entry(&p("editor.*"), || 0) = 1;
        *map.entry(&p("editor.tab.*"), || 0) = 2;
        *map.entry(&p("editor.open"), || 0) = 3;
        assert_eq!(map.lookup("editor.open"), Some(&3));
        assert_eq!(map.lookup("editor.save"), Some(&1));
        assert_eq!(map.lookup("editor.tab.close"), Some(&2));
        assert_eq!(
            map.lookup("editor.tab."),
            Some(&1),
            "the prefix needs one more byte"
        );
        assert_eq!(map.lookup("editor."), None);
        assert_eq!(map.lookup("editor"), None);
        assert_eq!(map.lookup("other.open"), None);
        assert_eq!(map.remove(&p("editor.open")), Some(3));
        assert_eq!(map.lookup("editor.open"), Some(&1));
    }

    #[test]
    fn matching_finds_every_pattern_once() {
        let mut map = PatternMap::default();
        *map.entry(&p("a.*"), || 0) = 1;
        *map.entry(&p("a.b.*"), || 0) = 2;
        *map.entry(&p("a.b.c"), || 0) = 3;
        let mut found: Vec<i32> = map.matching("a.b.c").copied().collect();
        found.sort_unstable();
        assert_eq!(found, [1, 2, 3]);
        assert_eq!(map.matching("a.x").copied().collect::<Vec<_>>(), [1]);
        assert_eq!(map.matching("b").count(), 0);
    }

    #[test]
    fn covers_is_about_sets_of_names() {
        assert!(p("editor.*").covers(&p("editor.open")));
        assert!(p("editor.*").covers(&p("editor.tab.*")));
        assert!(p("editor.*").covers(&p("editor.*")));
        assert!(!p("editor.*").covers(&p("editorial.x")));
        assert!(!p("editor.open").covers(&p("editor.*")));
        assert!(!p("ed.*").covers(&p("editor.*")));
    }
}

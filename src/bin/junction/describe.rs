//! `junction describe [METHOD]`: a method's OpenRPC description (params
//! and result schemas) from `rpc.discover`, or the whole document.

use junction::client::Client;
use serde_json::Value;

use crate::Failure;

/// Prints the method object of `method` (a name a pattern covers finds
/// the pattern's entry), or the whole document without one.
pub fn run(client: &mut Client, method: Option<&str>) -> Result<(), Failure> {
    let document = client.call("rpc.discover", None).map_err(crate::failure)?;
    let Some(method) = method else {
        println!("{}", crate::pretty(&document));
        return Ok(());
    };
    let methods = document["methods"].as_array().cloned().unwrap_or_default();
    let name_of = |m: &Value| m["name"].as_str().unwrap_or("").to_string();
    let found = methods.iter().find(|m| name_of(m) == method).or_else(|| {
        // The longest pattern that covers the name, as the bus routes it.
        methods
            .iter()
            .filter(|m| {
                let name = name_of(m);
                name.strip_suffix('*')
                    .is_some_and(|prefix| method.len() > prefix.len() && method.starts_with(prefix))
            })
            .max_by_key(|m| name_of(m).len())
    });
    match found {
        Some(entry) => {
            println!("{}", crate::pretty(entry));
            Ok(())
        }
        None => Err(Failure::Rpc(format!(
            "no method {method:?} is served now (junction methods lists them)"
        ))),
    }
}

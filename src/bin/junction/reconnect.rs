//! Reconnecting `provide` and `subscribe` after the daemon went away (a
//! restart): connect again with a bounded backoff, then register or
//! subscribe again.

use std::time::Duration;

use junction::client::{Client, ClientError};

use crate::Failure;

/// The first wait before connecting again.
const FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
const LONGEST: Duration = Duration::from_secs(5);

/// Connects: the CLI's own connect (endpoint, time-out, token).
pub type Connect<'a> = &'a dyn Fn() -> Result<Client, Failure>;

/// Connects again and runs `setup` (register, subscribe) on the new
/// connection, waiting 100 ms, then twice as long each time up to 5 s,
/// until both work. A daemon that answers `setup` with an error (a name
/// taken meanwhile, a policy refusal) ends it: retrying would not help.
pub fn again<T>(
    connect: Connect<'_>,
    mut setup: impl FnMut(&mut Client) -> Result<T, ClientError>,
) -> Result<(Client, T), Failure> {
    let mut delay = FIRST;
    loop {
        std::thread::sleep(delay);
        match connect() {
            Ok(mut client) => match setup(&mut client) {
                Ok(done) => return Ok((client, done)),
                Err(e @ (ClientError::Rpc(_) | ClientError::Usage(_))) => {
                    return Err(crate::failure(e));
                }
                Err(_) => {}
            },
            Err(Failure::Connection(_)) => {}
            Err(other) => return Err(other),
        }
        delay = (delay * 2).min(LONGEST);
    }
}

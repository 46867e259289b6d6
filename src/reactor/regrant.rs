//! The loop's side of a reload: when the policy's generation moves, every
//! open connection is judged again between two turns (see `crate::reload`).

use super::Core;
use crate::policy::Rejudged;

impl Core {
    /// Called at the start of a turn: tells the service manager how the
    /// loop stands, and applies a reloaded policy to open connections.
    pub(super) fn between_turns(&mut self) {
        self.context
            .notifier()
            .turn(self.now, self.stopping(), self.context.stats());
        let generation = self.context.policy().generation();
        if generation != self.policy_generation {
            self.policy_generation = generation;
            self.apply_policy(generation);
        }
    }

    /// Gives each open connection the rights the new policy grants its
    /// identity (its bus membership too); closes the ones it no longer lets in.
    fn apply_policy(&mut self, generation: u64) {
        let access = self.context.access();
        let guard = self.context.guard();
        let mut refused = Vec::new();
        let mut regranted = 0usize;
        for (key, client) in &mut self.clients {
            let conn = &mut client.conn;
            match guard.rejudge(&access, conn.rights().identity(), conn.peer()) {
                Rejudged::Keep => {}
                Rejudged::Rights(rights) => {
                    self.bus.regrant(conn.id(), rights.grants());
                    conn.set_rights(rights);
                    regranted += 1;
                }
                Rejudged::Close => refused.push((key, conn.rights().identity().label())),
            }
        }
        for (key, identity) in refused {
            tracing::warn!(
                conn = key,
                %identity,
                "closing: the reloaded policy no longer lets this identity in"
            );
            self.close(key);
        }
        tracing::info!(
            generation,
            connections = regranted,
            "open connections now hold the rights of the reloaded policy"
        );
    }
}

//! Provider groups: several connections that provide one name together
//! (proto/bus.md section 1, "Provider groups"), the local counterpart of a
//! NATS queue group. Each opts in at registration (`"group": true`); a call
//! goes to the member with the fewest calls pending on it, ties taken in
//! turn so that a stream of quick calls is shared too. A member that leaves
//! takes only its own pending calls with it (-32022); the others keep
//! serving. An exclusive name and a group never share a name: registering
//! one over the other is -32020, saying which it is.

use std::cell::Cell;

use super::{Bus, Caller};
use crate::policy::{Action, Target};
use crate::stats::Stats;
use crate::workers::ConnRef;

use super::pattern::Pattern;

/// Who provides a registered name or pattern.
#[derive(Debug)]
pub(crate) enum Providers {
    /// One connection, alone (the default).
    Exclusive(ConnRef),
    /// A group of connections that opted in; never empty.
    Group(Group),
}

/// The members of a provider group.
#[derive(Debug)]
pub(crate) struct Group {
    /// In the order they joined.
    pub(crate) members: Vec<ConnRef>,
    /// Where the next search for the least busy member starts, so that
    /// members with equal loads take calls in turn.
    next: Cell<usize>,
}

impl Group {
    fn of(id: ConnRef) -> Self {
        Self {
            members: vec![id],
            next: Cell::new(0),
        }
    }
}

impl Bus {
    /// The member of the group providing `method` that gets the next call:
    /// of those the policy lets provide it, the one with the fewest calls
    /// pending, preferring members whose output is not congested. Ties go
    /// round the group. None when no member may provide the name.
    pub(super) fn pick_member(&mut self, method: &str) -> Option<ConnRef> {
        let Some(Providers::Group(group)) = self.names.lookup(method) else {
            return None;
        };
        let count = group.members.len();
        let start = group.next.get() % count.max(1);
        // (congested, pending, position) of the best so far.
        let mut best: Option<(bool, usize, usize)> = None;
        for step in 0..count {
            let at = (start + step) % count;
            let id = group.members[at];
            let Some(member) = self.members.get_mut(&id) else {
                continue;
            };
            if !member.grants.is_everything() {
                let grants = &member.grants;
                let allowed = member.verdicts.get(method, || {
                    grants.permits(Action::Provide, Target::Name(method))
                });
                if !allowed {
                    continue;
                }
            }
            let rank = (self.congested.contains(&id), member.providing, at);
            if best.is_none_or(|b| (rank.0, rank.1) < (b.0, b.1)) {
                best = Some(rank);
            }
        }
        let Some((_, _, at)) = best else {
            Stats::bump(&self.stats.forbidden);
            tracing::debug!(method, "bus: no member of the group may provide this name");
            return None;
        };
        group.next.set(at + 1);
        Some(group.members[at])
    }

    /// Records `id` as a provider of `name`: alone, or joining its group.
    /// The checks ([`Bus::conflict`]) have passed: an exclusive owner
    /// asking for a group, or the last member of a group asking for the
    /// name alone, switches the name's mode.
    pub(super) fn claim(&mut self, name: &Pattern, id: ConnRef, group: bool) {
        if self.names.get(name).is_none() {
            self.export(name, true);
        }
        let entry = self.names.entry(name, || Providers::Exclusive(id));
        match (&mut *entry, group) {
            (Providers::Exclusive(_), false) => *entry = Providers::Exclusive(id),
            (Providers::Exclusive(_), true) => *entry = Providers::Group(Group::of(id)),
            (Providers::Group(g), true) => {
                if !g.members.contains(&id) {
                    g.members.push(id);
                }
            }
            (Providers::Group(_), false) => *entry = Providers::Exclusive(id),
        }
    }

    /// Takes `id` off the providers of `name`; the name is released (true)
    /// when no provider is left.
    pub(super) fn release(&mut self, name: &Pattern, id: ConnRef) -> bool {
        let gone = match self.names.get_mut(name) {
            Some(Providers::Exclusive(owner)) => *owner == id,
            Some(Providers::Group(group)) => {
                group.members.retain(|m| *m != id);
                group.members.is_empty()
            }
            None => false,
        };
        if gone {
            self.names.remove(name);
            self.export(name, false);
        }
        gone
    }

    /// Takes `id` off the providers of each of `names` (a provider that
    /// left or unregistered), updating what `rpc.methods` shows: a name no
    /// one provides any more leaves the directory.
    pub(super) fn release_all<'n>(
        &mut self,
        id: ConnRef,
        names: impl Iterator<Item = &'n Pattern>,
    ) {
        let directory = std::sync::Arc::clone(&self.directory);
        let mut directory = match directory.write() {
            Ok(directory) => directory,
            Err(poisoned) => poisoned.into_inner(),
        };
        for name in names {
            if self.release(name, id) {
                let text = name.to_string();
                // Its counters go with it (see crate::observe).
                self.name_stats.remove(name);
                self.observe.released(&text);
                directory.remove(&text);
            } else if let Some(Providers::Group(g)) = self.names.get(name) {
                directory.insert(name.to_string(), group_text(g.members.len()));
            }
        }
    }

    /// Why the caller may not provide `name` in this mode, if another holds
    /// it the other way (or alone): (the holder, true for a group).
    pub(super) fn conflict(
        &self,
        caller: &Caller<'_>,
        name: &Pattern,
        group: bool,
    ) -> Option<Conflict> {
        match self.names.get(name)? {
            Providers::Exclusive(owner) if *owner != caller.id => Some(Conflict::Exclusive(*owner)),
            Providers::Exclusive(_) => None,
            Providers::Group(_) if group => None,
            Providers::Group(g) if g.members == [caller.id] => None,
            Providers::Group(g) => Some(Conflict::Group(g.members.len())),
        }
    }

    /// The text `rpc.methods` shows for who provides `name` now.
    pub(super) fn directory_text(&self, name: &Pattern, caller: &Caller<'_>) -> String {
        match self.names.get(name) {
            Some(Providers::Group(g)) => group_text(g.members.len()),
            _ => format!(
                "provided by connection {} ({})",
                caller.id.token,
                caller.peer.transport().name()
            ),
        }
    }
}

/// What `rpc.methods` says of a name a group of `members` provides.
pub(super) fn group_text(members: usize) -> String {
    let plural = if members == 1 { "" } else { "s" };
    format!("provided by a group of {members} connection{plural}")
}

/// Who holds a name in a way that refuses a registration.
#[derive(Debug, Clone, Copy)]
pub(super) enum Conflict {
    /// One connection, alone.
    Exclusive(ConnRef),
    /// A group of this many connections (asked: alone).
    Group(usize),
}

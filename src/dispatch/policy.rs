//! The dispatcher's side of the access policy: judging tokens (with the
//! throttle), `rpc.auth` on a connection already served, and refusals.

use std::sync::Arc;

use super::{Answer, Dispatcher};
use crate::access::offered_token;
use crate::error::{ErrorCode, RpcError};
use crate::router::{Context, Params};
use crate::stats::Stats;

impl Dispatcher<'_, '_, '_> {
    /// Judges an offered token: throttled addresses are refused unjudged;
    /// a match sets the connection's rights, a miss counts against the address.
    pub(super) fn check_token(
        &mut self,
        params: Params<'_>,
    ) -> Result<(), std::borrow::Cow<'static, str>> {
        self.judge_token(offered_token(params))
    }

    /// `Authorization: Bearer TOKEN` on an HTTP request (`served`: the
    /// connection was already served): judged as `rpc.auth` is, with the
    /// same tokens, throttle and identities. Like [`Self::reauthenticate`],
    /// an anonymous or unauthenticated peer becomes the token's identity and
    /// a Unix one keeps its own.
    pub(crate) fn authenticate_bearer(
        &mut self,
        served: bool,
        token: &[u8],
    ) -> Result<(), std::borrow::Cow<'static, str>> {
        use crate::policy::IdentityKind;
        let keeps = served && self.rights.identity().kind != IdentityKind::Anonymous;
        let kept = keeps.then(|| std::mem::take(self.rights));
        let verdict = self.judge_token(Some(token.to_vec()));
        if let Some(kept) = kept {
            *self.rights = kept;
            return verdict;
        }
        let counter = match verdict {
            Ok(()) => &self.shared.stats().auth_successes,
            Err(_) => &self.shared.stats().auth_failures,
        };
        Stats::bump(counter);
        if verdict.is_ok() && served {
            let grants = self.rights.grants();
            self.shared.bus.regrant(self.conn, grants);
        }
        verdict
    }

    /// Judges an offered token (None: the offer was malformed).
    fn judge_token(
        &mut self,
        offered: Option<Vec<u8>>,
    ) -> Result<(), std::borrow::Cow<'static, str>> {
        let context: &Arc<Context> = self.shared.context;
        let guard = context.guard();
        let now = std::time::Instant::now();
        if let Err(throttled) = guard.auth_allowed(self.peer, now) {
            Stats::bump(&self.shared.stats().auth_throttled);
            return Err(format!(
                "too many failed attempts from this address; retry in {}s",
                throttled.retry_after.as_secs().max(1)
            )
            .into());
        }
        let Some(offered) = offered else {
            return Err("rpc.auth takes {\"token\": \"...\"} (or [\"...\"], or a raw body)".into());
        };
        match context.access().match_token(&offered) {
            Some(name) => {
                guard.auth_passed(self.peer);
                *self.rights = guard.token(name, self.peer);
                Ok(())
            }
            None => {
                guard.auth_failed(self.peer, now);
                Err("authentication failed: wrong token".into())
            }
        }
    }

    /// `rpc.auth` on a connection already served: an anonymous TCP peer
    /// becomes the token's identity; elsewhere the token is only checked.
    pub(super) fn reauthenticate(&mut self, answer: Answer<'_>, params: Params<'_>) {
        use crate::policy::IdentityKind;
        let context: &Arc<Context> = self.shared.context;
        if context.access().tokens.is_empty() {
            let error = RpcError::with(
                ErrorCode::Unauthorized,
                "authentication is not enabled on this daemon (no token)",
            );
            return self.send_error(answer, &error);
        }
        let anonymous = self.rights.identity().kind == IdentityKind::Anonymous;
        let kept = if anonymous {
            None
        } else {
            Some(std::mem::take(self.rights))
        };
        let verdict = self.check_token(params);
        if let Some(kept) = kept {
            *self.rights = kept; // Unix and token identities stay as they are.
        }
        match verdict {
            Ok(()) => {
                if anonymous {
                    Stats::bump(&self.shared.stats().auth_successes);
                    let grants = self.rights.grants();
                    self.shared.bus.regrant(self.conn, grants);
                }
                self.send_result(answer, |reply| reply.json(&true));
            }
            Err(why) => {
                if anonymous {
                    Stats::bump(&self.shared.stats().auth_failures);
                }
                let message = if why.starts_with("authentication failed") {
                    "wrong or missing token".into()
                } else {
                    why
                };
                self.send_error(answer, &RpcError::with(ErrorCode::Unauthorized, message));
            }
        }
    }

    /// Answers a request the policy refuses (-32008), counts and logs it.
    pub(super) fn forbid(&mut self, answer: Answer<'_>, action: crate::policy::Action, name: &str) {
        Stats::bump(&self.shared.stats().forbidden);
        crate::policy::warn_refused(self.rights.identity(), action, name);
        if !answer.is_notification() {
            let error = RpcError::with(
                ErrorCode::Forbidden,
                format_args!(
                    "{} may not {} {name:?} (see the policy in docs/security.md)",
                    self.rights.identity(),
                    action.name()
                ),
            );
            self.send_error(answer, &error);
        }
    }
}

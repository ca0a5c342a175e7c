//! Carry out a [`Plan`]: everything that can fail happens before anything running changes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::info;
use tunnel_proto::{ItemKind, Message};

use super::plan::{plan, Plan, Refusal};
use super::ReloadSummary;
use crate::config::{ClientConfig, VisitorConfig};
use crate::error::ClientError;
use crate::visitor::Bound;
use crate::{Live, Shared};

/// Check `new`, plan it against the running config, bind what it adds, then switch over.
pub(crate) async fn apply(
    shared: &Arc<Shared>,
    new: ClientConfig,
) -> Result<ReloadSummary, ClientError> {
    let _one_at_a_time = shared.reload.lock.lock().await;
    let problems = new.problems();
    if !problems.is_empty() {
        return Err(ClientError::Config(problems));
    }
    let old = shared.live.read().cfg.clone();
    let plan = plan(&old, &new)?;
    refuse_new_key_in_same_file(shared, &new)?;
    // Dropped on error: the listeners close and nothing running has changed.
    let bound = bind_arriving(shared, &plan, &new).await?;
    let stopping = switch_over(shared, &plan, &new, bound);
    // When the reload returns, a connection to a moved or swapped visitor's address reaches
    // the new visitor: wait for the old accept loops (each ends at its next poll).
    for ended in stopping {
        let _ = tokio::time::timeout(OLD_LOOP_GRACE, ended.cancelled_owned()).await;
    }

    if plan.registers() {
        let announced = plan
            .proxies
            .announced()
            .map(|n| (ItemKind::Proxy, n.to_owned()))
            .chain(
                plan.visitors
                    .announced()
                    .map(|n| (ItemKind::Visitor, n.to_owned())),
            );
        (shared.reload.announced.lock())
            .get_or_insert_with(Vec::new)
            .extend(announced);
        announce(shared).await;
    }
    // Checks of the proxies it added start now.
    crate::health::sync(shared);
    info!("config reloaded: {plan}");
    Ok(ReloadSummary::of(&plan))
}

/// Tell the server what is to be registered now (a reload's set, or a health check's
/// withdrawal or return) over the live session; if there is none, or it is still
/// registering, the session sends it as soon as it can.
pub(crate) async fn announce(shared: &Shared) {
    shared.reload_pending.store(true, Ordering::Release);
    let current = shared.current.read().clone();
    if let Some(lanes) = current {
        if shared.reload_pending.swap(false, Ordering::AcqRel) {
            let req = Message::Register(shared.register_request());
            let _ = lanes.first().send(req).await;
        }
    }
}

/// The key file is read at start: the same path holding another key is a change too.
fn refuse_new_key_in_same_file(shared: &Shared, new: &ClientConfig) -> Result<(), ClientError> {
    let key = new
        .resolve_auth_key()
        .map_err(|p| ClientError::Config(vec![p]))?;
    if key.as_bytes() == shared.key.as_slice() {
        return Ok(());
    }
    Err(Refusal {
        fields: vec![if new.auth_key_file.is_some() {
            "auth_key_file"
        } else {
            "auth_key"
        }],
    }
    .into())
}

/// A listener for every added or changed visitor. One whose `bind` a departing visitor
/// holds (its own old settings, or a removed one's) shares that socket instead of binding
/// again, which would fail while the old one still listens.
async fn bind_arriving(
    shared: &Shared,
    plan: &Plan,
    new: &ClientConfig,
) -> Result<Vec<(VisitorConfig, Bound)>, ClientError> {
    let mut departing: Vec<(String, crate::visitor::Spare)> = {
        let running = shared.visitors.lock();
        plan.visitors
            .departing()
            .filter_map(|name| running.get(name))
            .filter_map(|r| {
                let spare = r.spare.lock();
                let spare = spare.as_ref()?.try_clone().ok()?;
                Some((r.cfg.bind.clone(), spare))
            })
            .collect()
    };
    let mut out = Vec::new();
    for name in plan.visitors.arriving() {
        let Some(v) = new.visitors.iter().find(|v| v.name == name) else {
            continue;
        };
        let bound = match departing
            .iter()
            .position(|(bind, s)| *bind == v.bind && s.fits(v))
        {
            // Taken out: two new visitors on one address fail as they would at start.
            Some(i) => Bound::share(v, &departing.swap_remove(i).1)?,
            None => Bound::bind(v).await?,
        };
        out.push((v.clone(), bound));
    }
    Ok(out)
}

/// How long a reload waits for a departing visitor's accept loop to return.
const OLD_LOOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Make `new` the running config. Nothing here can fail. Returns what tells when each
/// departing visitor's accept loop has ended.
fn switch_over(
    shared: &Arc<Shared>,
    plan: &Plan,
    new: &ClientConfig,
    bound: Vec<(VisitorConfig, Bound)>,
) -> Vec<tokio_util::sync::CancellationToken> {
    let stopped: Vec<_> = {
        let mut running = shared.visitors.lock();
        plan.visitors
            .departing()
            .filter_map(|name| running.remove(name))
            .collect()
    };
    *shared.live.write() = Live::from_config(new);
    // The new accept loops start before the old ones stop: a shared socket never closes.
    for (v, b) in bound {
        shared.spawn_visitor(v, b);
    }
    stopped
        .into_iter()
        .map(|r| {
            r.stop.cancel();
            r.ended
        })
        .collect()
}

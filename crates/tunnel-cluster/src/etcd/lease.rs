//! Leases: etcd's LeaseGrant, LeaseKeepAlive and LeaseRevoke.

use std::time::Duration;

use super::EtcdStore;
use crate::store::LeaseId;
use crate::ClusterError;

impl EtcdStore {
    /// A lease of `ttl`, in whole seconds (rounded up; etcd raises it to its minimum, 2 s at
    /// default election settings).
    pub(super) async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, ClusterError> {
        let secs = i64::try_from(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0))
            .unwrap_or(i64::MAX)
            .max(1);
        let mut lease = self.client.lease_client();
        let resp = self
            .cx
            .bounded("lease grant", lease.grant(secs, None))
            .await?;
        Ok(resp.id())
    }

    /// One renewal on a keep-alive stream of its own, closed afterwards. A registry renews
    /// its one lease every few seconds, so a stream per call costs nothing that matters (see
    /// the measurement in tests/etcd_store.rs) and leaves no state to go stale: no stream to
    /// find broken after a reconnect, none to clean up when the lease ends.
    pub(super) async fn renew(&self, id: LeaseId) -> Result<Duration, ClusterError> {
        let op = "lease keep-alive";
        let mut lease = self.client.lease_client();
        let renewal = async {
            // etcd-client sends the first renewal and checks its answer itself (TTL > 0)
            // without returning it; a second one on the same stream reports the TTL.
            let (mut keeper, mut answers) = lease.keep_alive(id).await?;
            keeper.keep_alive().await?;
            answers.message().await
        };
        match self.cx.bounded_raw(op, renewal).await? {
            Ok(Some(answer)) if answer.ttl() > 0 => Ok(Duration::from_secs(
                u64::try_from(answer.ttl()).unwrap_or(0),
            )),
            // TTL 0: the lease expired between the two renewals.
            Ok(Some(_)) => Err(ClusterError::LeaseGone(id)),
            Ok(None) => Err(self.cx.classify(
                op,
                etcd_client::Error::LeaseKeepAliveError("etcd closed the keep-alive stream".into()),
            )),
            Err(e) => Err(self.cx.classify_lease(op, id, e)),
        }
    }

    /// End lease `id` now; etcd deletes its keys in one revision. A lease already gone is
    /// [`ClusterError::LeaseGone`].
    pub(super) async fn revoke_lease(&self, id: LeaseId) -> Result<(), ClusterError> {
        let mut lease = self.client.lease_client();
        match self
            .cx
            .bounded_raw("lease revoke", lease.revoke(id))
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.cx.classify_lease("lease revoke", id, e)),
        }
    }
}

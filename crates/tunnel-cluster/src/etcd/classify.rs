//! etcd-client's errors turned into [`ClusterError`]s that say what the operator can do, and
//! the one timeout every request runs under.

use std::future::Future;
use std::time::Duration;

use tonic::Code;

use crate::store::LeaseId;
use crate::ClusterError;

/// Where errors point: the endpoints and the request timeout.
#[derive(Debug, Clone)]
pub(super) struct Context {
    pub(super) endpoints: String,
    pub(super) timeout: Duration,
}

impl Context {
    /// Run `request` under the request timeout; a timeout is [`ClusterError::Unavailable`]
    /// around [`ClusterError::EtcdTimeout`], an error is [`Context::classify`]'d.
    pub(super) async fn bounded<T>(
        &self,
        op: &'static str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, ClusterError> {
        self.bounded_raw(op, request)
            .await?
            .map_err(|e| self.classify(op, e))
    }

    /// [`Context::bounded`] leaving etcd's error to the caller, which knows more about it
    /// (a lease, a compaction).
    pub(super) async fn bounded_raw<T>(
        &self,
        op: &'static str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<Result<T, etcd_client::Error>, ClusterError> {
        tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| self.timed_out(op))
    }

    pub(super) fn timed_out(&self, op: &'static str) -> ClusterError {
        ClusterError::Unavailable(Box::new(ClusterError::EtcdTimeout {
            endpoints: self.endpoints.clone(),
            op,
            after: self.timeout,
        }))
    }

    /// `e` as the error the registry acts on: [`ClusterError::Etcd`] with a hint, wrapped in
    /// [`ClusterError::Unavailable`] when a retry may cure it (etcd down, no leader, a broken
    /// connection, an untrusted certificate that may yet be replaced).
    pub(super) fn classify(&self, op: &'static str, e: etcd_client::Error) -> ClusterError {
        use etcd_client::Error as E;
        let (transient, hint) = match &e {
            E::GRpcStatus(s) => status_hint(s.code(), s.message()),
            E::TransportError(_) | E::IoError(_) => (
                true,
                "check the endpoint's host and port, and for https:// its certificate and \
                 etcd_ca_cert",
            ),
            E::WatchError(_) | E::LeaseKeepAliveError(_) => (true, "etcd closed the stream"),
            E::InvalidUri(_) | E::InvalidArgs(_) | E::EndpointError(_) => {
                (false, "check the endpoints setting")
            }
            _ => (
                false,
                "this is unexpected: please report it with this message",
            ),
        };
        let (transient, hint) = if mentions_certificate(&e) {
            (
                true,
                "etcd's certificate is not trusted: set etcd_ca_cert to the PEM file of the CA \
                 that signed it, and check that it names the endpoint's host",
            )
        } else {
            (transient, hint)
        };
        let detail = match &e {
            // tonic's Display adds the code's description and the transport's debug dump.
            E::GRpcStatus(s) if !s.message().is_empty() => s.message().to_owned(),
            other => other.to_string(),
        };
        let err = ClusterError::Etcd {
            endpoints: self.endpoints.clone(),
            op,
            detail,
            hint,
            source: Box::new(e),
        };
        if transient {
            ClusterError::Unavailable(Box::new(err))
        } else {
            err
        }
    }

    /// Like [`Context::classify`], but etcd's "requested lease not found" is
    /// [`ClusterError::LeaseGone`] of `lease`.
    pub(super) fn classify_lease(
        &self,
        op: &'static str,
        lease: LeaseId,
        e: etcd_client::Error,
    ) -> ClusterError {
        if is_lease_not_found(&e) {
            ClusterError::LeaseGone(lease)
        } else {
            self.classify(op, e)
        }
    }
}

/// Whether the TLS handshake failed over etcd's certificate.
fn mentions_certificate(e: &etcd_client::Error) -> bool {
    let text = match e {
        etcd_client::Error::GRpcStatus(s) => s.message().to_owned(),
        other => other.to_string(),
    };
    text.contains("certificate") || text.contains("UnknownIssuer")
}

/// Whether etcd said the lease does not exist (expired, revoked, or never granted).
pub(super) fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == Code::NotFound && s.message().contains("lease not found")
        }
        // etcd-client's own check of the first keep-alive answer (TTL <= 0).
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("lease not found"),
        _ => false,
    }
}

/// Whether etcd refused a transaction for carrying too many operations.
pub(super) fn is_too_many_ops(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == Code::InvalidArgument && s.message().contains("too many operations"))
}

/// Whether a read at a fixed revision found that revision compacted away.
pub(super) fn is_compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == Code::OutOfRange && s.message().contains("compacted"))
}

/// Whether a retry may cure a status, and what the operator should check.
fn status_hint(code: Code, message: &str) -> (bool, &'static str) {
    // etcd reports bad credentials as InvalidArgument ("authentication failed, invalid user
    // ID or password", "user name is empty") and an expired token as Unauthenticated.
    if message.contains("authentication failed")
        || message.contains("user name")
        || message.contains("auth token")
    {
        return (
            false,
            "check etcd_user and etcd_password (etcd has authentication enabled)",
        );
    }
    match code {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => (
            true,
            "check that etcd runs, is reachable from this host and has a leader",
        ),
        Code::ResourceExhausted => (
            true,
            "etcd is overloaded or out of space (`etcdctl alarm list`; compact and defragment)",
        ),
        Code::Unauthenticated => (
            false,
            "check etcd_user and etcd_password (etcd has authentication enabled)",
        ),
        Code::PermissionDenied => (
            false,
            "grant etcd_user's role read and write on the cluster prefix",
        ),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => (
            false,
            "etcd refused the request as malformed; check its --max-request-bytes and \
             --max-txn-ops",
        ),
        // Unknown carries gRPC-level failures such as a broken HTTP/2 connection.
        Code::Unknown | Code::Internal => (true, "check etcd's log"),
        _ => (false, "check etcd's log"),
    }
}

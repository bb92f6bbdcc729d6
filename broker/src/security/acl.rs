//! ACLs with Kafka's semantics: resource types, literal and prefixed patterns, operations,
//! ALLOW and DENY (deny wins), `super_users`, implied DESCRIBE, and
//! `allow_everyone_if_no_acl_found`. Bindings live in the metadata store; every broker
//! keeps a copy, reloaded every `metadata_refresh_ms` and at once after its own changes.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use icestream_storage::meta::AclBinding;
use icestream_storage::{MetaError, MetaStore};
use tokio_util::sync::CancellationToken;

pub mod resource {
    pub const ANY: i8 = 1;
    pub const TOPIC: i8 = 2;
    pub const GROUP: i8 = 3;
    pub const CLUSTER: i8 = 4;
    pub const TRANSACTIONAL_ID: i8 = 5;
    pub const DELEGATION_TOKEN: i8 = 6;
    pub const USER: i8 = 7;
}

pub mod pattern {
    pub const ANY: i8 = 1;
    pub const MATCH: i8 = 2;
    pub const LITERAL: i8 = 3;
    pub const PREFIXED: i8 = 4;
}

pub mod op {
    pub const ANY: i8 = 1;
    pub const ALL: i8 = 2;
    pub const READ: i8 = 3;
    pub const WRITE: i8 = 4;
    pub const CREATE: i8 = 5;
    pub const DELETE: i8 = 6;
    pub const ALTER: i8 = 7;
    pub const DESCRIBE: i8 = 8;
    pub const CLUSTER_ACTION: i8 = 9;
    pub const DESCRIBE_CONFIGS: i8 = 10;
    pub const ALTER_CONFIGS: i8 = 11;
    pub const IDEMPOTENT_WRITE: i8 = 12;
    pub const CREATE_TOKENS: i8 = 13;
    pub const DESCRIBE_TOKENS: i8 = 14;
}

pub mod permission {
    pub const ANY: i8 = 1;
    pub const DENY: i8 = 2;
    pub const ALLOW: i8 = 3;
}

/// The operations Kafka defines for a resource type (`AclEntry.supportedOperations`),
/// the ones KIP-430's authorized-operations fields report on.
pub fn supported_operations(resource_type: i8) -> &'static [i8] {
    match resource_type {
        resource::TOPIC => &[
            op::READ,
            op::WRITE,
            op::CREATE,
            op::DESCRIBE,
            op::DELETE,
            op::ALTER,
            op::DESCRIBE_CONFIGS,
            op::ALTER_CONFIGS,
        ],
        resource::GROUP => &[op::READ, op::DESCRIBE, op::DELETE],
        resource::CLUSTER => &[
            op::CREATE,
            op::CLUSTER_ACTION,
            op::DESCRIBE_CONFIGS,
            op::ALTER_CONFIGS,
            op::IDEMPOTENT_WRITE,
            op::ALTER,
            op::DESCRIBE,
        ],
        resource::TRANSACTIONAL_ID => &[op::DESCRIBE, op::WRITE],
        _ => &[],
    }
}

/// The name of the one cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// Matches every name in a literal binding.
pub const WILDCARD: &str = "*";

/// A binding a client asks to create: valid types, a concrete pattern, a principal of
/// the form `Type:name`. The reason when not.
pub fn check_binding(b: &AclBinding) -> Result<(), String> {
    if !(resource::TOPIC..=resource::USER).contains(&b.resource_type) {
        return Err(format!("invalid resource type {}", b.resource_type));
    }
    if !matches!(b.pattern_type, pattern::LITERAL | pattern::PREFIXED) {
        return Err(format!("invalid pattern type {}", b.pattern_type));
    }
    if !(op::ALL..=op::DESCRIBE_TOKENS).contains(&b.operation) {
        return Err(format!("invalid operation {}", b.operation));
    }
    if !matches!(b.permission_type, permission::DENY | permission::ALLOW) {
        return Err(format!("invalid permission type {}", b.permission_type));
    }
    if b.resource_name.is_empty() {
        return Err("resource name must not be empty".into());
    }
    if b.resource_type == resource::CLUSTER && b.resource_name != CLUSTER_NAME {
        return Err(format!("the cluster resource is named {CLUSTER_NAME}"));
    }
    if !b
        .principal
        .split_once(':')
        .is_some_and(|(t, n)| !t.is_empty() && !n.is_empty())
    {
        return Err(format!(
            "principal {:?} is not of the form User:name",
            b.principal
        ));
    }
    if b.host.is_empty() {
        return Err("host must not be empty (use * for any)".into());
    }
    Ok(())
}

/// A filter of DescribeAcls and DeleteAcls (`None`: any).
#[derive(Debug, Clone)]
pub struct AclFilter {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission_type: i8,
}

impl AclFilter {
    pub fn matches(&self, b: &AclBinding) -> bool {
        let any_or = |want: i8, any: i8, got: i8| want == any || want == got;
        if !any_or(self.resource_type, resource::ANY, b.resource_type)
            || !any_or(self.operation, op::ANY, b.operation)
            || !any_or(self.permission_type, permission::ANY, b.permission_type)
        {
            return false;
        }
        if self.principal.as_ref().is_some_and(|p| *p != b.principal)
            || self.host.as_ref().is_some_and(|h| *h != b.host)
        {
            return false;
        }
        match self.pattern_type {
            pattern::ANY => self
                .resource_name
                .as_ref()
                .is_none_or(|n| *n == b.resource_name),
            // MATCH: the bindings that would apply to the named resource.
            pattern::MATCH => match &self.resource_name {
                None => true,
                Some(n) => match b.pattern_type {
                    pattern::LITERAL => b.resource_name == *n || b.resource_name == WILDCARD,
                    pattern::PREFIXED => n.starts_with(&b.resource_name),
                    _ => false,
                },
            },
            p => {
                p == b.pattern_type
                    && self
                        .resource_name
                        .as_ref()
                        .is_none_or(|n| *n == b.resource_name)
            }
        }
    }

    /// Filters that cannot match anything Kafka would store (UNKNOWN codes) are refused.
    pub fn check(&self) -> Result<(), String> {
        if self.resource_type < resource::ANY || self.resource_type > resource::USER {
            return Err(format!("invalid resource type {}", self.resource_type));
        }
        if !(pattern::ANY..=pattern::PREFIXED).contains(&self.pattern_type) {
            return Err(format!("invalid pattern type {}", self.pattern_type));
        }
        if !(op::ANY..=op::DESCRIBE_TOKENS).contains(&self.operation) {
            return Err(format!("invalid operation {}", self.operation));
        }
        if !(permission::ANY..=permission::ALLOW).contains(&self.permission_type) {
            return Err(format!("invalid permission type {}", self.permission_type));
        }
        Ok(())
    }
}

pub struct Authorizer {
    /// Off: every request is allowed and the ACL APIs answer SECURITY_DISABLED.
    pub enabled: bool,
    super_users: HashSet<String>,
    allow_if_no_acl: bool,
    meta: MetaStore,
    acls: RwLock<Arc<Vec<AclBinding>>>,
}

impl Authorizer {
    pub fn new(enabled: bool, super_users: &str, allow_if_no_acl: bool, meta: MetaStore) -> Self {
        Self {
            enabled,
            super_users: super_users
                .split([';', ','])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            allow_if_no_acl,
            meta,
            acls: RwLock::new(Arc::new(Vec::new())),
        }
    }

    pub async fn reload(&self) -> Result<(), MetaError> {
        let acls = self.meta.acls().await?;
        if let Ok(mut current) = self.acls.write() {
            *current = Arc::new(acls);
        }
        Ok(())
    }

    /// Keeps the bindings fresh until `shutdown`.
    pub async fn run(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => break,
            }
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "reading ACLs failed");
            }
        }
    }

    pub fn bindings(&self) -> Arc<Vec<AclBinding>> {
        self.acls.read().map(|a| a.clone()).unwrap_or_default()
    }

    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.contains(principal)
    }

    /// Whether `principal` connecting from `host` may do `operation` on the resource.
    pub fn authorize(
        &self,
        principal: &str,
        host: &str,
        operation: i8,
        resource_type: i8,
        name: &str,
    ) -> bool {
        if !self.enabled || self.is_super_user(principal) {
            return true;
        }
        let acls = self.bindings();
        let on_resource: Vec<&AclBinding> = acls
            .iter()
            .filter(|b| {
                b.resource_type == resource_type
                    && match b.pattern_type {
                        pattern::LITERAL => b.resource_name == name || b.resource_name == WILDCARD,
                        pattern::PREFIXED => name.starts_with(&b.resource_name),
                        _ => false,
                    }
            })
            .collect();
        if on_resource.is_empty() {
            return self.allow_if_no_acl;
        }
        let applies = |b: &&&AclBinding| {
            (b.principal == principal || b.principal == "User:*")
                && (b.host == host || b.host == WILDCARD)
        };
        let denied = on_resource.iter().filter(applies).any(|b| {
            b.permission_type == permission::DENY
                && (b.operation == operation || b.operation == op::ALL)
        });
        if denied {
            return false;
        }
        // DESCRIBE follows from READ, WRITE, DELETE and ALTER; DESCRIBE_CONFIGS from
        // ALTER_CONFIGS.
        let implied: &[i8] = match operation {
            op::DESCRIBE => &[op::DESCRIBE, op::READ, op::WRITE, op::DELETE, op::ALTER],
            op::DESCRIBE_CONFIGS => &[op::DESCRIBE_CONFIGS, op::ALTER_CONFIGS],
            _ => std::slice::from_ref(&operation),
        };
        on_resource.iter().filter(applies).any(|b| {
            b.permission_type == permission::ALLOW
                && (b.operation == op::ALL || implied.contains(&b.operation))
        })
    }

    /// Whether the principal may do `operation` on some resource of the type (Kafka's
    /// `authorizeByResourceType`, used for idempotent producers that write any topic).
    pub fn authorize_any(&self, principal: &str, host: &str, operation: i8, rt: i8) -> bool {
        if !self.enabled || self.is_super_user(principal) {
            return true;
        }
        let acls = self.bindings();
        let applies = |b: &&AclBinding| {
            b.resource_type == rt
                && (b.principal == principal || b.principal == "User:*")
                && (b.host == host || b.host == WILDCARD)
                && (b.operation == operation || b.operation == op::ALL)
        };
        acls.iter()
            .filter(applies)
            .any(|b| b.permission_type == permission::ALLOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(name: &str, pat: i8, principal: &str, operation: i8, perm: i8) -> AclBinding {
        AclBinding {
            resource_type: resource::TOPIC,
            resource_name: name.into(),
            pattern_type: pat,
            principal: principal.into(),
            host: "*".into(),
            operation,
            permission_type: perm,
        }
    }

    #[tokio::test]
    async fn kafka_semantics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = icestream_storage::kv::open("embedded", dir.path())
            .await
            .expect("kv");
        let meta = MetaStore::new(kv, Arc::new(icestream_storage::SystemClock));
        meta.create_acls(&[
            binding(
                "orders-",
                pattern::PREFIXED,
                "User:alice",
                op::WRITE,
                permission::ALLOW,
            ),
            binding(
                "orders-eu",
                pattern::LITERAL,
                "User:alice",
                op::ALL,
                permission::DENY,
            ),
            binding("*", pattern::LITERAL, "User:*", op::READ, permission::ALLOW),
            binding(
                "payments",
                pattern::LITERAL,
                "User:*",
                op::READ,
                permission::DENY,
            ),
        ])
        .await
        .expect("create");
        let a = Authorizer::new(true, "User:admin", false, meta);
        a.reload().await.expect("reload");
        let ok = |p: &str, o: i8, t: &str| a.authorize(p, "1.2.3.4", o, resource::TOPIC, t);
        assert!(ok("User:alice", op::WRITE, "orders-us"));
        assert!(
            ok("User:alice", op::DESCRIBE, "orders-us"),
            "implied by WRITE"
        );
        assert!(!ok("User:alice", op::WRITE, "orders-eu"), "deny wins");
        assert!(!ok("User:alice", op::WRITE, "refunds"));
        assert!(
            ok("User:bob", op::READ, "refunds"),
            "wildcard principal and name"
        );
        assert!(!ok("User:bob", op::READ, "payments"));
        assert!(ok("User:admin", op::READ, "payments"), "super user");
        assert!(
            !a.authorize("User:bob", "h", op::READ, resource::GROUP, "g"),
            "no ACL"
        );
        assert!(a.authorize_any("User:alice", "h", op::WRITE, resource::TOPIC));
        assert!(!a.authorize_any("User:bob", "h", op::WRITE, resource::TOPIC));
        let filter = AclFilter {
            resource_type: resource::TOPIC,
            resource_name: Some("orders-eu".into()),
            pattern_type: pattern::MATCH,
            principal: None,
            host: None,
            operation: op::ANY,
            permission_type: permission::ANY,
        };
        assert_eq!(a.bindings().iter().filter(|b| filter.matches(b)).count(), 3);
    }
}

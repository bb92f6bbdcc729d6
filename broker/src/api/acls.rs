//! CreateAcls, DescribeAcls and DeleteAcls (KIP-140): bindings in the metadata store,
//! applied by every broker's authorizer. Creating and deleting need ALTER on the
//! cluster, describing needs DESCRIBE; with the authorizer off they answer
//! SECURITY_DISABLED, as Kafka does without an authorizer.

use std::collections::BTreeMap;

use icestream_storage::meta::AclBinding;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::Broker;
use crate::security::acl::{self, op, resource, AclFilter};

fn message(m: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(m.into()))
}

/// `None` when the request may go on, else the error for every part of it.
fn gate(broker: &Broker, ctx: &Context, operation: i8) -> Option<(ResponseError, String)> {
    if !broker.security.authorizer.enabled {
        return Some((
            ResponseError::SecurityDisabled,
            "No authorizer is configured (authorizer = \"acl\" turns it on)".into(),
        ));
    }
    if !ctx.allowed(broker, operation, resource::CLUSTER, acl::CLUSTER_NAME) {
        return Some((
            ResponseError::ClusterAuthorizationFailed,
            "Cluster authorization failed".into(),
        ));
    }
    None
}

pub async fn create(broker: &Broker, ctx: &Context, req: CreateAclsRequest) -> CreateAclsResponse {
    let results = if let Some((e, m)) = gate(broker, ctx, op::ALTER) {
        req.creations
            .iter()
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(e.code())
                    .with_error_message(message(m.clone()))
            })
            .collect()
    } else {
        let mut results = Vec::with_capacity(req.creations.len());
        let mut valid = Vec::new();
        for c in &req.creations {
            let b = AclBinding {
                resource_type: c.resource_type,
                resource_name: c.resource_name.to_string(),
                pattern_type: c.resource_pattern_type,
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                operation: c.operation,
                permission_type: c.permission_type,
            };
            match acl::check_binding(&b) {
                Ok(()) => {
                    valid.push(b);
                    results.push(AclCreationResult::default());
                }
                Err(m) => results.push(
                    AclCreationResult::default()
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(message(m)),
                ),
            }
        }
        if let Err(e) = broker.meta.create_acls(&valid).await {
            tracing::warn!(error = %e, "storing ACLs failed");
            for r in results.iter_mut().filter(|r| r.error_code == 0) {
                r.error_code = ResponseError::UnknownServerError.code();
                r.error_message = message(e.to_string());
            }
        } else {
            tracing::info!(principal = %ctx.principal, count = valid.len(), "ACLs created");
            let _ = broker.security.authorizer.reload().await;
        }
        results
    };
    CreateAclsResponse::default().with_results(results)
}

fn filter_of(
    resource_type: i8,
    name: Option<&StrBytes>,
    pattern_type: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission_type: i8,
) -> AclFilter {
    AclFilter {
        resource_type,
        resource_name: name.map(|s| s.to_string()),
        pattern_type,
        principal: principal.map(|s| s.to_string()),
        host: host.map(|s| s.to_string()),
        operation,
        permission_type,
    }
}

pub fn describe(broker: &Broker, ctx: &Context, req: DescribeAclsRequest) -> DescribeAclsResponse {
    if let Some((e, m)) = gate(broker, ctx, op::DESCRIBE) {
        return DescribeAclsResponse::default()
            .with_error_code(e.code())
            .with_error_message(message(m));
    }
    let filter = filter_of(
        req.resource_type_filter,
        req.resource_name_filter.as_ref(),
        req.pattern_type_filter,
        req.principal_filter.as_ref(),
        req.host_filter.as_ref(),
        req.operation,
        req.permission_type,
    );
    if let Err(m) = filter.check() {
        return DescribeAclsResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(message(m));
    }
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for b in broker
        .security
        .authorizer
        .bindings()
        .iter()
        .filter(|b| filter.matches(b))
    {
        by_resource
            .entry((b.resource_type, b.resource_name.clone(), b.pattern_type))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(StrBytes::from_string(b.principal.clone()))
                    .with_host(StrBytes::from_string(b.host.clone()))
                    .with_operation(b.operation)
                    .with_permission_type(b.permission_type),
            );
    }
    DescribeAclsResponse::default().with_resources(
        by_resource
            .into_iter()
            .map(|((rt, name, pt), acls)| {
                DescribeAclsResource::default()
                    .with_resource_type(rt)
                    .with_resource_name(StrBytes::from_string(name))
                    .with_pattern_type(pt)
                    .with_acls(acls)
            })
            .collect(),
    )
}

pub async fn delete(broker: &Broker, ctx: &Context, req: DeleteAclsRequest) -> DeleteAclsResponse {
    if let Some((e, m)) = gate(broker, ctx, op::ALTER) {
        return DeleteAclsResponse::default().with_filter_results(
            req.filters
                .iter()
                .map(|_| {
                    DeleteAclsFilterResult::default()
                        .with_error_code(e.code())
                        .with_error_message(message(m.clone()))
                })
                .collect(),
        );
    }
    // Read the bindings from the store, not the cache: a binding another broker just
    // created must be deletable here.
    let current = match broker.meta.acls().await {
        Ok(c) => c,
        Err(e) => {
            return DeleteAclsResponse::default().with_filter_results(
                req.filters
                    .iter()
                    .map(|_| {
                        DeleteAclsFilterResult::default()
                            .with_error_code(ResponseError::UnknownServerError.code())
                            .with_error_message(message(e.to_string()))
                    })
                    .collect(),
            )
        }
    };
    let mut results = Vec::with_capacity(req.filters.len());
    for f in &req.filters {
        let filter = filter_of(
            f.resource_type_filter,
            f.resource_name_filter.as_ref(),
            f.pattern_type_filter,
            f.principal_filter.as_ref(),
            f.host_filter.as_ref(),
            f.operation,
            f.permission_type,
        );
        if let Err(m) = filter.check() {
            results.push(
                DeleteAclsFilterResult::default()
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(message(m)),
            );
            continue;
        }
        let matching: Vec<AclBinding> = current
            .iter()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect();
        let result = match broker.meta.delete_acls(&matching).await {
            Ok(removed) => DeleteAclsFilterResult::default().with_matching_acls(
                removed
                    .into_iter()
                    .map(|b| {
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(b.resource_type)
                            .with_resource_name(StrBytes::from_string(b.resource_name))
                            .with_pattern_type(b.pattern_type)
                            .with_principal(StrBytes::from_string(b.principal))
                            .with_host(StrBytes::from_string(b.host))
                            .with_operation(b.operation)
                            .with_permission_type(b.permission_type)
                    })
                    .collect(),
            ),
            Err(e) => DeleteAclsFilterResult::default()
                .with_error_code(ResponseError::UnknownServerError.code())
                .with_error_message(message(e.to_string())),
        };
        results.push(result);
    }
    tracing::info!(principal = %ctx.principal, "ACLs deleted");
    let _ = broker.security.authorizer.reload().await;
    DeleteAclsResponse::default().with_filter_results(results)
}

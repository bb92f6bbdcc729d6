//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): the users SASL
//! authenticates, stored salted in the metadata store (the client salts the password; the
//! broker stores the derived keys). DESCRIBE / ALTER on the cluster.

use std::collections::HashSet;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::broker::Broker;
use crate::security::acl::{self, op, resource};
use crate::security::scram::{self, Mechanism};

fn message(m: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(m.into()))
}

pub async fn describe(
    broker: &Broker,
    ctx: &Context,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if !ctx.allowed(broker, op::DESCRIBE, resource::CLUSTER, acl::CLUSTER_NAME) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let all = match broker.meta.scram_users().await {
        Ok(a) => a,
        Err(e) => {
            return DescribeUserScramCredentialsResponse::default()
                .with_error_code(ResponseError::UnknownServerError.code())
                .with_error_message(message(e.to_string()))
        }
    };
    let infos = |user: &str| -> Vec<CredentialInfo> {
        all.iter()
            .filter(|(u, ..)| u == user)
            .filter_map(|(_, m, iterations)| {
                Some(
                    CredentialInfo::default()
                        .with_mechanism(Mechanism::from_name(m)?.code())
                        .with_iterations(*iterations as i32),
                )
            })
            .collect()
    };
    let wanted: Vec<String> = match &req.users {
        Some(users) if !users.is_empty() => users.iter().map(|u| u.name.to_string()).collect(),
        _ => {
            let mut users: Vec<String> = all.iter().map(|(u, ..)| u.clone()).collect();
            users.dedup();
            users
        }
    };
    let mut seen = HashSet::new();
    let duplicates: HashSet<&String> = wanted.iter().filter(|u| !seen.insert(*u)).collect();
    let mut reported = HashSet::new();
    let mut results = Vec::new();
    for user in &wanted {
        if !reported.insert(user) {
            continue;
        }
        let result = DescribeUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.clone()));
        let credentials = infos(user);
        results.push(if duplicates.contains(user) {
            result
                .with_error_code(ResponseError::DuplicateResource.code())
                .with_error_message(message(format!("Cannot describe SCRAM credentials for the same user twice in a single request: {user}")))
        } else if credentials.is_empty() {
            result
                .with_error_code(ResponseError::ResourceNotFound.code())
                .with_error_message(message(format!(
                    "Attempt to describe a user credential that does not exist: {user}"
                )))
        } else {
            result.with_credential_infos(credentials)
        });
    }
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

fn result(user: &str, error: Option<(ResponseError, String)>) -> AlterUserScramCredentialsResult {
    let r =
        AlterUserScramCredentialsResult::default().with_user(StrBytes::from_string(user.into()));
    match error {
        None => r,
        Some((e, m)) => r.with_error_code(e.code()).with_error_message(message(m)),
    }
}

pub async fn alter(
    broker: &Broker,
    ctx: &Context,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mut results = Vec::new();
    let allowed = ctx.allowed(broker, op::ALTER, resource::CLUSTER, acl::CLUSTER_NAME);
    for d in &req.deletions {
        let user = d.name.as_str();
        let error = if !allowed {
            Some((
                ResponseError::ClusterAuthorizationFailed,
                "Cluster authorization failed".into(),
            ))
        } else if let Some(m) = Mechanism::from_code(d.mechanism) {
            match broker.meta.delete_scram_credential(user, m.name()).await {
                Ok(true) => {
                    tracing::info!(user, mechanism = m.name(), "SCRAM credential deleted");
                    None
                }
                Ok(false) => Some((
                    ResponseError::ResourceNotFound,
                    format!("Attempt to delete a user credential that does not exist: {user}"),
                )),
                Err(e) => Some((ResponseError::UnknownServerError, e.to_string())),
            }
        } else {
            Some((
                ResponseError::UnsupportedSaslMechanism,
                format!("Unknown SCRAM mechanism {}", d.mechanism),
            ))
        };
        results.push(result(user, error));
    }
    for u in &req.upsertions {
        let user = u.name.as_str();
        let iterations = u32::try_from(u.iterations).unwrap_or(0);
        let error = if !allowed {
            Some((
                ResponseError::ClusterAuthorizationFailed,
                "Cluster authorization failed".into(),
            ))
        } else if user.is_empty() {
            Some((
                ResponseError::UnacceptableCredential,
                "Username must not be empty".into(),
            ))
        } else if !(scram::MIN_ITERATIONS..=scram::MAX_ITERATIONS).contains(&iterations) {
            Some((
                ResponseError::UnacceptableCredential,
                format!(
                    "Iterations {} must be between {} and {}",
                    u.iterations,
                    scram::MIN_ITERATIONS,
                    scram::MAX_ITERATIONS
                ),
            ))
        } else if let Some(m) = Mechanism::from_code(u.mechanism) {
            let credential =
                scram::credential_from_salted(m, &u.salted_password, &u.salt, iterations);
            match broker
                .meta
                .set_scram_credential(user, m.name(), &credential)
                .await
            {
                Ok(()) => {
                    tracing::info!(user, mechanism = m.name(), "SCRAM credential set");
                    None
                }
                Err(e) => Some((ResponseError::UnknownServerError, e.to_string())),
            }
        } else {
            Some((
                ResponseError::UnsupportedSaslMechanism,
                format!("Unknown SCRAM mechanism {}", u.mechanism),
            ))
        };
        results.push(result(user, error));
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}

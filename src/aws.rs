//! What the AWS clients (S3 input, Glue catalog) share: the standard credential and region chain
//! (environment, profile, SSO, instance or container role), HTTPS through rustls with ring, and a
//! small runtime of their own, since the rest of riskflow is not async.
//!
//! Endpoints follow the SDK's rules, so `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL_GLUE` (or
//! `AWS_ENDPOINT_URL`) point a client elsewhere, e.g. at a local moto server.

use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// A runtime for one blocking caller: the SDK's futures run on the calling thread.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The shared SDK configuration from the standard chain.
pub async fn config() -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await
}

/// Whether an endpoint override is set for `service` (then S3 needs path-style addressing).
pub fn endpoint_overridden(service: &str) -> bool {
    std::env::var_os(format!("AWS_ENDPOINT_URL_{service}")).is_some()
        || std::env::var_os("AWS_ENDPOINT_URL").is_some()
}

//! Building the SDK client: one code path for real DynamoDB, a compatible
//! server at a URL, and the embedded server. Timeouts and retries are the
//! SDK's own (standard retry mode: jittered exponential backoff, bounded
//! attempts), never a hand-rolled loop.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;

/// Where the table lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The SDK's regional default, credentials from the standard AWS chain.
    Aws,
    /// A DynamoDB-compatible server at this URL, credentials from the
    /// standard AWS chain.
    Url(String),
    /// The in-process embedded server at this URL, with static dummy
    /// credentials (it checks none).
    Embedded(String),
    /// A DynamoDB-compatible server at `url` with static credentials
    /// (DynamoDB Local and other emulators).
    Static {
        /// Endpoint URL.
        url: String,
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: String,
    },
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Aws => f.write_str("Aws"),
            Endpoint::Url(url) => f.debug_tuple("Url").field(url).finish(),
            Endpoint::Embedded(url) => f.debug_tuple("Embedded").field(url).finish(),
            // The secret stays out of logs.
            Endpoint::Static {
                url, access_key_id, ..
            } => f
                .debug_struct("Static")
                .field("url", url)
                .field("access_key_id", access_key_id)
                .finish_non_exhaustive(),
        }
    }
}

/// Client settings. Every field has a production default.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Region name (signing region for non-AWS endpoints).
    pub region: String,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for one attempt of a call.
    pub attempt_timeout: Duration,
    /// Timeout for a whole call, retries included.
    pub operation_timeout: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            endpoint: Endpoint::Aws,
            region: "us-east-1".to_owned(),
            connect_timeout: Duration::from_millis(1000),
            attempt_timeout: Duration::from_millis(2000),
            operation_timeout: Duration::from_millis(5000),
            max_attempts: 3,
        }
    }
}

impl ClientSettings {
    /// Build the SDK client. Loads the AWS credential chain unless embedded.
    pub async fn build(&self) -> aws_sdk_dynamodb::Client {
        let config = match self.fixed_credentials() {
            Some((url, credentials)) => aws_sdk_dynamodb::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(self.region())
                .endpoint_url(url)
                .credentials_provider(credentials)
                .timeout_config(self.timeouts())
                .retry_config(self.retries())
                .build(),
            None => {
                let shared = self.shared_config().await;
                let mut builder = aws_sdk_dynamodb::config::Builder::from(&shared);
                if let Endpoint::Url(url) = &self.endpoint {
                    builder = builder.endpoint_url(url);
                }
                builder.build()
            }
        };
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// Build the DynamoDB Streams SDK client for the same endpoint, with the
    /// same credentials, timeouts and retry policy as [`build`](Self::build).
    /// (DynamoDB-compatible servers serve both APIs at one URL; real AWS
    /// resolves the streams endpoint from the region.)
    pub async fn build_streams(&self) -> aws_sdk_dynamodbstreams::Client {
        let config = match self.fixed_credentials() {
            Some((url, credentials)) => aws_sdk_dynamodbstreams::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(self.region())
                .endpoint_url(url)
                .credentials_provider(credentials)
                .timeout_config(self.timeouts())
                .retry_config(self.retries())
                .build(),
            None => {
                let shared = self.shared_config().await;
                let mut builder = aws_sdk_dynamodbstreams::config::Builder::from(&shared);
                if let Endpoint::Url(url) = &self.endpoint {
                    builder = builder.endpoint_url(url);
                }
                builder.build()
            }
        };
        aws_sdk_dynamodbstreams::Client::from_conf(config)
    }

    fn region(&self) -> Region {
        Region::new(self.region.clone())
    }

    fn timeouts(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .operation_timeout(self.operation_timeout)
            .build()
    }

    fn retries(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts)
            .with_initial_backoff(Duration::from_millis(20))
            .with_max_backoff(Duration::from_millis(500))
    }

    /// The URL and static credentials, for endpoints that take them.
    fn fixed_credentials(&self) -> Option<(&str, Credentials)> {
        let (url, id, secret) = match &self.endpoint {
            Endpoint::Embedded(url) => (url, "edge-session", "embedded"),
            Endpoint::Static {
                url,
                access_key_id,
                secret_access_key,
            } => (url, access_key_id.as_str(), secret_access_key.as_str()),
            Endpoint::Aws | Endpoint::Url(_) => return None,
        };
        Some((
            url.as_str(),
            Credentials::new(id, secret, None, None, "edge-session-static"),
        ))
    }

    /// The shared config from the standard AWS chain (region default,
    /// credentials), with our timeouts and retries.
    async fn shared_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(self.region())
            .timeout_config(self.timeouts())
            .retry_config(self.retries())
            .load()
            .await
    }
}

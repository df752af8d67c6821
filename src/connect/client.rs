//! `ember sql --connect sc://HOST:PORT`: statements run on a running `ember server` over
//! the Spark Connect protocol, as a PySpark client runs `spark.sql(...)`: the statement goes
//! as a `SqlCommand`; a query comes back as a relation that is then executed, its rows
//! streamed as Arrow IPC batches.

use std::time::Duration;

use anyhow::{bail, Context};
use arrow::record_batch::RecordBatch;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use super::proto;
use super::proto::spark_connect_service_client::SparkConnectServiceClient;

/// What an `sc://` URL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectUrl {
    /// Host name or address.
    pub host: String,
    /// Port (Spark Connect's 15002 when absent).
    pub port: u16,
    /// The bearer token (`;token=...`), if any.
    pub token: Option<String>,
}

/// Spark Connect's default port.
const DEFAULT_PORT: u16 = 15002;

/// Parses `sc://HOST[:PORT][/;param=value;...]`.
///
/// # Errors
///
/// Not an `sc://` URL, a bad port, TLS asked for (`use_ssl=true`: not supported by this
/// client), or an unknown parameter.
pub fn parse_url(url: &str) -> anyhow::Result<ConnectUrl> {
    let rest = url
        .strip_prefix("sc://")
        .with_context(|| format!("`{url}`: a Spark Connect URL starts with sc://"))?;
    let (address, params) = match rest.split_once('/') {
        Some((a, p)) => (a, p.trim_start_matches(';')),
        None => (rest, ""),
    };
    let (host, port) = match address.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || address.starts_with('[') => (
            h.to_string(),
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .with_context(|| format!("`{url}`: `{p}` is not a port"))?,
        ),
        _ => (address.to_string(), DEFAULT_PORT),
    };
    if host.is_empty() {
        bail!("`{url}`: no host");
    }
    let mut token = None;
    for param in params.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = param
            .split_once('=')
            .with_context(|| format!("`{url}`: `{param}` is not key=value"))?;
        match key {
            "token" => token = Some(value.to_string()),
            "use_ssl" if value.eq_ignore_ascii_case("false") => {}
            "use_ssl" => bail!("`{url}`: TLS (use_ssl) is not supported by `ember sql --connect`"),
            "user_id" | "session_id" | "user_agent" => {}
            other => bail!("`{url}`: unknown parameter `{other}`"),
        }
    }
    Ok(ConnectUrl { host, port, token })
}

/// A Spark Connect session on a server.
pub struct ConnectClient {
    client: SparkConnectServiceClient<Channel>,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    session_id: String,
    target: String,
}

impl ConnectClient {
    /// Connects to the server `url` names.
    ///
    /// # Errors
    ///
    /// The URL is malformed or the server cannot be reached (the error names it).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let parsed = parse_url(url)?;
        let target = format!("{}:{}", parsed.host, parsed.port);
        let endpoint = Endpoint::from_shared(format!("http://{target}"))
            .with_context(|| format!("`{url}`: not a valid address"))?
            .connect_timeout(Duration::from_secs(10));
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach the Spark Connect server at {target}"))?;
        let token = parsed
            .token
            .map(|t| {
                MetadataValue::try_from(format!("Bearer {t}"))
                    .context("the token holds characters a header cannot carry")
            })
            .transpose()?;
        Ok(Self {
            client: SparkConnectServiceClient::new(channel).max_decoding_message_size(512 << 20),
            token,
            session_id: uuid::Uuid::new_v4().to_string(),
            target,
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(t) = &self.token {
            request.metadata_mut().insert("authorization", t.clone());
        }
        request
    }

    /// Runs `plan` and collects what it streams back: Arrow batches, and the relation of a
    /// SQL command.
    async fn execute(
        &mut self,
        plan: proto::Plan,
    ) -> anyhow::Result<(Vec<RecordBatch>, Option<proto::Relation>)> {
        let message = proto::ExecutePlanRequest {
            session_id: self.session_id.clone(),
            user_context: Some(proto::UserContext {
                user_id: std::env::var("USER").unwrap_or_else(|_| "ember".into()),
                user_name: String::new(),
            }),
            plan: Some(plan),
            client_type: Some(format!("ember-sql/{}", env!("CARGO_PKG_VERSION"))),
            ..Default::default()
        };
        let request = self.request(message);
        let mut stream = self
            .client
            .execute_plan(request)
            .await
            .map_err(|s| status_error(&self.target, s))?
            .into_inner();
        let mut batches = Vec::new();
        let mut relation = None;
        use proto::execute_plan_response::ResponseType;
        while let Some(response) = stream
            .message()
            .await
            .map_err(|s| status_error(&self.target, s))?
        {
            match response.response_type {
                Some(ResponseType::ArrowBatch(batch)) => {
                    let reader = arrow::ipc::reader::StreamReader::try_new(
                        std::io::Cursor::new(batch.data.to_vec()),
                        None,
                    )
                    .context("the server sent a batch that is not Arrow IPC")?;
                    for b in reader {
                        batches.push(b.context("decoding a result batch")?);
                    }
                }
                Some(ResponseType::SqlCommandResult(result)) => relation = result.relation,
                Some(ResponseType::ResultComplete(_)) => break,
                _ => {}
            }
        }
        Ok((batches, relation))
    }

    /// Runs one SQL statement and returns its rows (a command's result rows, or the
    /// query's).
    ///
    /// # Errors
    ///
    /// The server refused or failed it (its message, e.g. a parse or analysis error).
    pub async fn sql(&mut self, statement: &str) -> anyhow::Result<Vec<RecordBatch>> {
        let command = proto::Plan {
            op_type: Some(proto::plan::OpType::Command(proto::Command {
                command_type: Some(proto::command::CommandType::SqlCommand(proto::SqlCommand {
                    sql: statement.to_string(),
                    ..Default::default()
                })),
            })),
        };
        let (batches, relation) = self.execute(command).await?;
        match relation {
            Some(relation) => {
                let plan = proto::Plan {
                    op_type: Some(proto::plan::OpType::Root(relation)),
                };
                Ok(self.execute(plan).await?.0)
            }
            None => Ok(batches),
        }
    }
}

/// A failed call as the user should read it: the server's message, and where.
fn status_error(target: &str, status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unavailable => anyhow::anyhow!(
            "the Spark Connect server at {target} is not answering: {}",
            status.message()
        ),
        tonic::Code::Unauthenticated => anyhow::anyhow!(
            "the server at {target} refused the call: {} (give the secret as sc://HOST:PORT/;token=SECRET)",
            status.message()
        ),
        _ => anyhow::anyhow!("{}", status.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_as_pyspark_writes_them() {
        assert_eq!(
            parse_url("sc://localhost").unwrap(),
            ConnectUrl {
                host: "localhost".into(),
                port: 15002,
                token: None
            }
        );
        let u = parse_url("sc://10.0.0.1:7000/;token=abc;user_id=me").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.token.as_deref()),
            ("10.0.0.1", 7000, Some("abc"))
        );
        for bad in [
            "http://localhost:15002",
            "sc://host:notaport",
            "sc://host:0",
            "sc://:15002",
            "sc://host/;use_ssl=true",
            "sc://host/;colour=blue",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}

//! Redshift's bulk path (`--s3-staging s3://bucket/prefix`): each epoch's rows become one gzip
//! CSV object under the prefix, which Redshift loads into the staging table with
//! `COPY … FROM 's3://…'` (its way of taking bulk data: it has no `COPY FROM STDIN`). The object
//! is deleted once the epoch is committed.
//!
//! Redshift reads the object with the credentials the `COPY` names: an IAM role attached to the
//! cluster (`--s3-staging-role arn:aws:iam::…:role/…`), or else the access keys riskflow itself
//! uploads with (from the standard AWS chain).

use super::csv::push_quoted_csv_field;
use crate::record::{RowRef, TextField};
use crate::source::s3::parse_url;
use flate2::write::GzEncoder;
use std::io::Write;

/// Where staged epochs go, and how Redshift may read them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Staging {
    pub bucket: String,
    /// The key prefix, without a trailing `/` (may be empty).
    pub prefix: String,
    /// The IAM role Redshift assumes to read the objects; `None`: the uploader's access keys.
    pub iam_role: Option<String>,
}

impl S3Staging {
    /// `s3://bucket[/prefix]`.
    pub fn parse(url: &str, iam_role: Option<String>) -> Result<S3Staging, String> {
        let invalid = || format!("`{url}` is not an S3 staging location: use s3://bucket/prefix");
        let (bucket, prefix) = match parse_url(url) {
            Some((bucket, prefix)) => (bucket, prefix.trim_end_matches('/')),
            None => (
                url.strip_prefix("s3://")
                    .map(|b| b.trim_end_matches('/'))
                    .filter(|b| !b.is_empty() && !b.contains('/'))
                    .ok_or_else(invalid)?,
                "",
            ),
        };
        if iam_role.as_deref().is_some_and(|r| r.contains('\'')) {
            return Err("the staging IAM role must not contain a quote".into());
        }
        Ok(S3Staging {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            iam_role,
        })
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

impl std::fmt::Display for S3Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Uploads staged epochs and says how `COPY` reads them.
pub struct Uploader {
    staging: S3Staging,
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
    /// The `COPY` clauses naming the credentials (and region) Redshift reads with.
    credentials: String,
    /// Makes keys unique to this process, so that concurrent writers never share one.
    session: String,
}

impl Uploader {
    pub fn connect(staging: &S3Staging) -> Result<Uploader, String> {
        let runtime = crate::aws::runtime().map_err(|e| e.to_string())?;
        let (client, credentials) = runtime.block_on(async {
            let shared = crate::aws::config().await;
            let config = aws_sdk_s3::config::Builder::from(&shared)
                .force_path_style(crate::aws::endpoint_overridden("S3"))
                .build();
            let region = shared
                .region()
                .map(|r| format!(" REGION '{}'", quoted(r.as_ref())))
                .unwrap_or_default();
            let credentials = match &staging.iam_role {
                Some(role) => format!("IAM_ROLE '{role}'{region}"),
                None => {
                    use aws_sdk_s3::config::ProvideCredentials;
                    let provider = shared.credentials_provider().ok_or(
                        "no AWS credentials to stage with: set them (or pass --s3-staging-role)",
                    )?;
                    let keys = provider
                        .provide_credentials()
                        .await
                        .map_err(|e| format!("AWS credentials: {e}"))?;
                    let token = keys
                        .session_token()
                        .map(|t| format!(" SESSION_TOKEN '{}'", quoted(t)))
                        .unwrap_or_default();
                    format!(
                        "ACCESS_KEY_ID '{}' SECRET_ACCESS_KEY '{}'{token}{region}",
                        quoted(keys.access_key_id()),
                        quoted(keys.secret_access_key())
                    )
                }
            };
            Ok::<_, String>((aws_sdk_s3::Client::from_conf(config), credentials))
        })?;
        let session = format!("{}-{}", std::process::id(), crate::time::now_nanos());
        Ok(Uploader {
            staging: staging.clone(),
            runtime,
            client,
            credentials,
            session,
        })
    }

    /// Uploads an epoch's CSV (gzip) as `<prefix>/<table>/<epoch>-<session>.csv.gz`; returns
    /// the object's key.
    pub fn put(&self, table: &str, epoch: u64, gzip_csv: Vec<u8>) -> Result<String, String> {
        let key = self
            .staging
            .key(&format!("{table}/{epoch:010}-{}.csv.gz", self.session));
        self.runtime
            .block_on(
                self.client
                    .put_object()
                    .bucket(&self.staging.bucket)
                    .key(&key)
                    .body(gzip_csv.into())
                    .send(),
            )
            .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())?;
        Ok(key)
    }

    pub fn location(&self) -> &S3Staging {
        &self.staging
    }

    /// Removes a staged object once its epoch is committed (a failure only leaves litter).
    pub fn delete(&self, key: &str) {
        let deleted = self.runtime.block_on(
            self.client
                .delete_object()
                .bucket(&self.staging.bucket)
                .key(key)
                .send(),
        );
        if let Err(error) = deleted {
            tracing::warn!(bucket = self.staging.bucket.as_str(), key, error = %aws_sdk_s3::error::DisplayErrorContext(error),
                "Cannot delete a staged epoch object; it is no longer needed.");
        }
    }

    /// The `COPY` that loads object `key` into `staging` (its columns `names`).
    pub fn copy_sql(&self, staging: &str, names: &str, key: &str) -> String {
        format!(
            "COPY {staging} ({names}) FROM 's3://{}/{}' {} FORMAT AS CSV GZIP NULL AS '\\\\N' DATEFORMAT 'YYYY-MM-DD' TIMEFORMAT 'auto'",
            self.staging.bucket,
            quoted(key),
            self.credentials
        )
    }
}

/// Text inside a single-quoted SQL literal.
fn quoted(text: &str) -> String {
    text.replace('\'', "''")
}

/// One row as the staged CSV holds it, in the staging table's column order: base columns,
/// feature columns (`features`, `None` as NULL; `real` columns at single precision), `_row`,
/// `_version`, `_modified_ts` (`modified`, RFC 3339).
pub struct CsvRow<'a> {
    pub row: RowRef<'a>,
    pub version: u32,
    pub features: &'a [(Option<f64>, bool)],
    pub modified: &'a str,
}

/// Formats staged rows into a gzip CSV body.
pub struct StagedCsv {
    gzip: GzEncoder<Vec<u8>>,
    line: Vec<u8>,
}

impl Default for StagedCsv {
    fn default() -> Self {
        StagedCsv {
            gzip: GzEncoder::new(Vec::new(), flate2::Compression::fast()),
            line: Vec::with_capacity(512),
        }
    }
}

impl StagedCsv {
    pub fn push(&mut self, row: &CsvRow<'_>) -> std::io::Result<()> {
        let line = &mut self.line;
        line.clear();
        let loan = row.row.loan;
        let number = |line: &mut Vec<u8>, value: Option<f64>| match value {
            Some(v) => line.extend_from_slice(zmij::Buffer::new().format(v).as_bytes()),
            None => line.extend_from_slice(b"\\N"),
        };
        // Always quoted: an unquoted `\N` would read as NULL.
        let text = |line: &mut Vec<u8>, field: TextField| {
            push_quoted_csv_field(line, row.row.text_bytes(field));
            line.push(b',');
        };
        number(line, loan.amount_requested);
        line.push(b',');
        let mut date = [0u8; 10];
        line.extend_from_slice(loan.application_date.write_iso(&mut date).as_bytes());
        line.push(b',');
        text(line, TextField::LoanTitle);
        number(line, loan.risk_score);
        line.push(b',');
        for field in TextField::AFTER_RISK_SCORE {
            text(line, field);
        }
        for &(value, real) in row.features {
            match (value, real) {
                (Some(v), true) => {
                    line.extend_from_slice(zmij::Buffer::new().format(v as f32).as_bytes())
                }
                _ => number(line, value),
            }
            line.push(b',');
        }
        line.extend_from_slice(itoa::Buffer::new().format(loan.row).as_bytes());
        line.push(b',');
        line.extend_from_slice(itoa::Buffer::new().format(row.version).as_bytes());
        line.push(b',');
        line.extend_from_slice(row.modified.as_bytes());
        line.push(b'\n');
        self.gzip.write_all(line)
    }

    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        self.gzip.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_urls_split_into_bucket_and_prefix() {
        let s = S3Staging::parse("s3://bucket/some/prefix/", None).unwrap();
        assert_eq!(
            (s.bucket.as_str(), s.prefix.as_str()),
            ("bucket", "some/prefix")
        );
        assert_eq!(s.key("t/1.csv.gz"), "some/prefix/t/1.csv.gz");
        let bare = S3Staging::parse("s3://bucket", None).unwrap();
        assert_eq!(bare.key("t/1.csv.gz"), "t/1.csv.gz");
        assert!(S3Staging::parse("bucket/prefix", None).is_err());
        assert!(S3Staging::parse("s3://b/p", Some("arn'x".into())).is_err());
    }
}

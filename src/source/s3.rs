//! S3 input (`--input s3://bucket/key[.gz]`): the object's body is streamed into the record
//! reader as it arrives, never downloaded whole first.
//!
//! Credentials, region and endpoint come from the standard AWS chain ([`crate::aws`]); with an
//! endpoint override (`AWS_ENDPOINT_URL_S3`, e.g. a local moto server) path-style addressing is
//! used.

use std::io::{self, Read};

/// `s3://bucket/key` split into its parts.
pub fn parse_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then_some((bucket, key))
}

/// The body of an object being read: a blocking [`Read`] over the SDK's async byte stream,
/// driven by a runtime of its own on the reading thread.
pub struct S3Body {
    runtime: tokio::runtime::Runtime,
    body: aws_sdk_s3::primitives::ByteStream,
    pending: bytes::Bytes,
}

impl Read for S3Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            match self.runtime.block_on(self.body.next()) {
                Some(Ok(bytes)) => self.pending = bytes,
                Some(Err(error)) => return Err(io::Error::other(error)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}

/// Opens `s3://bucket/key`: its body as a stream, and its size in bytes.
pub fn open(url: &str) -> io::Result<(S3Body, u64)> {
    let (bucket, key) = parse_url(url).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{url}` is not an S3 URL: use s3://bucket/key"),
        )
    })?;
    let runtime = crate::aws::runtime()?;
    let object = runtime.block_on(async {
        let config = aws_sdk_s3::config::Builder::from(&crate::aws::config().await)
            .force_path_style(crate::aws::endpoint_overridden("S3"))
            .build();
        aws_sdk_s3::Client::from_conf(config)
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
    });
    let object = object.map_err(|error| {
        let kind = match error.as_service_error() {
            Some(e) if e.is_no_such_key() => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(
            kind,
            aws_sdk_s3::error::DisplayErrorContext(error).to_string(),
        )
    })?;
    let size = object.content_length().unwrap_or(0).max(0) as u64;
    Ok((
        S3Body {
            runtime,
            body: object.body,
            pending: bytes::Bytes::new(),
        },
        size,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_split_into_bucket_and_key() {
        assert_eq!(
            super::parse_url("s3://loans/2007/rejected.csv.gz"),
            Some(("loans", "2007/rejected.csv.gz"))
        );
        assert_eq!(super::parse_url("s3://loans/"), None);
        assert_eq!(super::parse_url("/tmp/x.csv"), None);
    }
}

//! Connection profiles: a TOML file (`--config config/local.toml`, or `RISKFLOW_CONFIG`) holding
//! any of the settings the `RISKFLOW_*` environment variables hold.
//!
//! Precedence is profile < environment < flag: before the command line is parsed, each profile
//! setting becomes its environment variable unless that variable is already set, and a flag
//! always wins over the environment. A key the profile does not know is an error naming it.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The settings a profile may hold, each the value of the flag of the same name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub store: Option<String>,
    /// Where feature-set versions are kept when not in the store (`glue://DATABASE[/TABLE]`).
    pub catalog: Option<String>,
    pub input: Option<String>,
    pub brokers: Option<String>,
    pub topic: Option<String>,
    pub group: Option<String>,
    pub outflow_topic: Option<String>,
    pub workers: Option<u32>,
    pub epoch_rows: Option<u64>,
    pub log: Option<String>,
    pub log_format: Option<String>,
    /// AWS region for S3 and Glue (`AWS_REGION`).
    pub aws_region: Option<String>,
    /// Redshift's S3 staging location (`s3://bucket/prefix`) and the IAM role its `COPY` uses.
    pub s3_staging: Option<String>,
    pub s3_staging_role: Option<String>,
}

/// Errors of a profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile {path}")]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("profile {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Profile {
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|error| ProfileError::Read {
            path: path.to_owned(),
            error,
        })?;
        toml::from_str(&text).map_err(|e| ProfileError::Invalid {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
    }

    /// `(environment variable, value)` of every setting the profile holds.
    pub fn variables(&self) -> Vec<(&'static str, String)> {
        let text = [
            ("RISKFLOW_STORE", &self.store),
            ("RISKFLOW_CATALOG", &self.catalog),
            ("RISKFLOW_INPUT", &self.input),
            ("RISKFLOW_BROKERS", &self.brokers),
            ("RISKFLOW_TOPIC", &self.topic),
            ("RISKFLOW_GROUP", &self.group),
            ("RISKFLOW_OUTFLOW_TOPIC", &self.outflow_topic),
            ("RISKFLOW_LOG", &self.log),
            ("RISKFLOW_LOG_FORMAT", &self.log_format),
            ("AWS_REGION", &self.aws_region),
            ("RISKFLOW_S3_STAGING", &self.s3_staging),
            ("RISKFLOW_S3_STAGING_ROLE", &self.s3_staging_role),
        ];
        let numbers = [
            ("RISKFLOW_WORKERS", self.workers.map(u64::from)),
            ("RISKFLOW_EPOCH_ROWS", self.epoch_rows),
        ];
        text.into_iter()
            .filter_map(|(name, value)| Some((name, value.clone()?)))
            .chain(
                numbers
                    .into_iter()
                    .filter_map(|(name, value)| Some((name, value?.to_string()))),
            )
            .collect()
    }
}

/// The profile named by `--config PATH` / `--config=PATH` in `args`, or by `RISKFLOW_CONFIG`.
pub fn requested(args: &[String]) -> Option<PathBuf> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("RISKFLOW_CONFIG").map(PathBuf::from)
}

/// Loads the requested profile (if any) and sets, for each of its settings, the environment
/// variable that is not set yet. Call before any thread starts.
pub fn apply(args: &[String]) -> Result<(), ProfileError> {
    let Some(path) = requested(args) else {
        return Ok(());
    };
    for (name, value) in Profile::load(&path)?.variables() {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let error =
            toml::from_str::<Profile>("store = \"sqlite:a.db\"\nbrokerz = \"x:1\"\n").unwrap_err();
        assert!(error.message().contains("brokerz"), "{error}");
    }

    #[test]
    fn settings_become_their_environment_variables() {
        let profile: Profile = toml::from_str("brokers = \"h:1\"\nworkers = 3\n").unwrap();
        assert_eq!(
            profile.variables(),
            [
                ("RISKFLOW_BROKERS", "h:1".to_owned()),
                ("RISKFLOW_WORKERS", "3".to_owned())
            ]
        );
        let args: Vec<String> = ["riskflow", "run", "--config=config/x.toml"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(requested(&args), Some(PathBuf::from("config/x.toml")));
    }
}

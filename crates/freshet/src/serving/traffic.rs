//! Traffic policies from the pipeline file, kept across restarts.
//!
//! A model starts with the policy of its `[model.serving] traffic` (default `latest`) and holds
//! the versions its `[model.serving] versions` name, loaded from version files or model
//! checkpoint directories. `freshet run` keeps every later change (the admin endpoint,
//! `freshet models traffic`) in `<state-dir>/serving/`:
//!
//! - `<model>.json`: the policy, the pipeline file's policy when it was set, and the version
//!   file of the version it names;
//! - `versions/<model>.v<N>.json` (and its `.safetensors`): that version, written before the
//!   change takes effect (a change that cannot be written is refused).
//!
//! On restart the kept policy wins while the pipeline file still says what it said when the
//! policy was set; once the file's policy is edited, the file wins (the newest instruction).
//! The kept policy's version is loaded from its file, so a pin survives the learner moving on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use freshet_core::model::ModelSpec;
use freshet_core::serving::{ModelVersion, PolicyKeeper, ServingStart, TrafficPolicy};
use freshet_core::spec::PipelineSpec;
use freshet_learn::{Learner, LearnerOptions, ModelRegistry, PublishedModel};
use serde::{Deserialize, Serialize};

use super::ServedVersion;

/// What `<state-dir>/serving/<model>.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct KeptPolicy {
    /// The policy in force.
    policy: TrafficPolicy,
    /// The pipeline file's `[model.serving] traffic` when `policy` was set.
    pipeline_policy: TrafficPolicy,
    /// The version file of the version `policy` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version_file: Option<PathBuf>,
}

/// Writes policy changes into `<state-dir>/serving/`.
#[derive(Debug)]
pub struct TrafficKeeper {
    dir: PathBuf,
    /// Each model's `[model.serving] traffic`.
    file_policies: HashMap<String, TrafficPolicy>,
}

fn kept_path(dir: &Path, model: &str) -> PathBuf {
    dir.join(format!("{model}.json"))
}

impl PolicyKeeper for TrafficKeeper {
    fn keep(
        &self,
        model: &str,
        policy: TrafficPolicy,
        named: Option<&Arc<dyn ModelVersion>>,
    ) -> Result<(), String> {
        let version_file = match named {
            Some(version) => Some(version.save(&self.dir.join("versions"))?),
            None => None,
        };
        let kept = KeptPolicy {
            policy,
            pipeline_policy: self.file_policies.get(model).copied().unwrap_or_default(),
            version_file,
        };
        let path = kept_path(&self.dir, model);
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(&kept).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(())
    }
}

impl ModelVersion for ServedVersion {
    fn version(&self) -> u64 {
        self.0.version
    }

    fn score(
        &self,
        rows: &[freshet_core::serving::InputValue<'_>],
        out: &mut Vec<f32>,
    ) -> Result<(), freshet_core::serving::ScoreError> {
        self.score_rows(rows, out)
    }

    fn save(&self, dir: &Path) -> Result<PathBuf, String> {
        let path = PublishedModel::file_path(dir, &self.0.name, self.0.version);
        if path.is_file() {
            // versions never change: the file written before is this version
            return Ok(path);
        }
        self.0.save(dir).map_err(|e| e.to_string())
    }
}

/// Loads a version named by `[model.serving] versions`: a version file, or a model checkpoint
/// directory (its model's checkpoint, as the learner would resume it). Its inputs must be the
/// model's.
pub fn load_version(
    path: &Path,
    model: &ModelSpec,
    inputs: &[String],
) -> anyhow::Result<Arc<PublishedModel>> {
    let version = if path.is_dir() {
        let meta = path.join(format!("{}.json", model.name));
        if !meta.is_file() {
            bail!(
                "{}: a directory without a checkpoint of model `{}` ({} is missing)",
                path.display(),
                model.name,
                meta.display()
            );
        }
        let options = LearnerOptions {
            checkpoint_dir: Some(path.to_owned()),
            ..LearnerOptions::default()
        };
        let learner = Learner::resume(model, inputs.to_vec(), options)?;
        learner
            .registry()
            .current()
            .context("the checkpoint published no version")?
    } else {
        let version = PublishedModel::load(path)?;
        if *version.name != *model.name {
            bail!(
                "{}: a version of model `{}`, not of `{}`",
                path.display(),
                version.name,
                model.name
            );
        }
        Arc::new(version)
    };
    if *version.inputs != *inputs {
        bail!(
            "{}: its inputs ({}) are not the model's ({})",
            path.display(),
            version.inputs.join(", "),
            inputs.join(", ")
        );
    }
    Ok(version)
}

/// Each served model's start, by model name.
pub type Starts = HashMap<String, ServingStart>;

/// The start of every served model (policy and loaded versions) from the pipeline file and,
/// with a state directory, the policies kept there; and the keeper of later changes (with a
/// state directory).
pub fn serving_starts(
    spec: &PipelineSpec,
    registries: &HashMap<String, ModelRegistry>,
    state_dir: Option<&Path>,
) -> anyhow::Result<(Starts, Option<Arc<TrafficKeeper>>)> {
    let dir = state_dir.map(|d| d.join("serving"));
    if let Some(dir) = &dir {
        std::fs::create_dir_all(dir.join("versions"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut starts = HashMap::new();
    let mut file_policies = HashMap::new();
    for m in spec.models.iter().map(|m| m.get_ref()) {
        let Some(registry) = registries.get(&m.name) else {
            continue;
        };
        let inputs = super::resolved_inputs(m, registry);
        let context = |what: &str| format!("model `{}`, [model.serving] {what}", m.name);
        let mut versions: Vec<Arc<dyn ModelVersion>> = Vec::new();
        for path in &m.serving.versions {
            let version = load_version(path, m, &inputs).with_context(|| context("versions"))?;
            versions.push(Arc::new(ServedVersion(version)));
        }
        let mut policy = m.serving.traffic;
        file_policies.insert(m.name.clone(), policy);
        if let Some(dir) = &dir {
            let path = kept_path(dir, &m.name);
            if path.is_file() {
                let text = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let kept: KeptPolicy = serde_json::from_slice(&text)
                    .with_context(|| format!("{}: not a kept traffic policy", path.display()))?;
                if kept.pipeline_policy == policy {
                    if let Some(file) = &kept.version_file {
                        let version = load_version(file, m, &inputs).with_context(|| {
                            format!("the version of the kept policy ({})", path.display())
                        })?;
                        versions.push(Arc::new(ServedVersion(version)));
                    }
                    tracing::info!(model = %m.name, policy = %kept.policy, "traffic policy kept from the last run");
                    policy = kept.policy;
                } else {
                    tracing::info!(
                        model = %m.name,
                        policy = %policy,
                        kept = %kept.policy,
                        "the pipeline file's traffic policy changed since the kept one was set; the file's applies"
                    );
                }
            }
        }
        starts.insert(m.name.clone(), ServingStart { policy, versions });
    }
    let keeper = dir.map(|dir| Arc::new(TrafficKeeper { dir, file_policies }));
    Ok((starts, keeper))
}

/// The JSON body of a policy written on the command line: `latest`, `rollback`, `pin=N`,
/// `shadow=N`, `canary=N:PERCENT`, or JSON as the admin endpoint takes it.
pub fn policy_body(text: &str) -> anyhow::Result<serde_json::Value> {
    use serde_json::json;
    let text = text.trim();
    if text.starts_with('{') || text.starts_with('"') {
        return serde_json::from_str(text).with_context(|| format!("policy `{text}`: bad JSON"));
    }
    let number = |v: &str, what: &str| -> anyhow::Result<u64> {
        v.parse()
            .with_context(|| format!("policy `{text}`: {what} `{v}` is not a version number"))
    };
    Ok(match text.split_once('=') {
        None if text == "latest" || text == "rollback" => json!(text),
        Some(("pin", v)) => json!({ "pin": number(v, "pin")? }),
        Some(("shadow", v)) => json!({ "shadow": number(v, "shadow")? }),
        Some(("canary", v)) => {
            let (version, percent) = v
                .split_once(':')
                .with_context(|| format!("policy `{text}`: expected canary=VERSION:PERCENT"))?;
            let percent: f64 = percent
                .parse()
                .with_context(|| format!("policy `{text}`: `{percent}` is not a percentage"))?;
            json!({ "canary": { "version": number(version, "canary")?, "percent": percent } })
        }
        _ => bail!(
            "policy `{text}`: expected latest, rollback, pin=N, shadow=N, canary=N:PERCENT or JSON"
        ),
    })
}

/// `freshet models traffic NAME [POLICY] --addr ADDR`.
pub fn traffic_command(addr: &str, model: &str, policy: Option<&str>) -> anyhow::Result<()> {
    let body = policy.map(policy_body).transpose()?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://{addr}/v1/admin/models/{model}/traffic");
    let token = std::env::var(super::ADMIN_TOKEN_ENV).ok();
    let auth = token.map(|t| format!("Bearer {t}"));
    let response = match &body {
        Some(body) => {
            let mut request = agent.post(&url).header("content-type", "application/json");
            if let Some(auth) = &auth {
                request = request.header("authorization", auth);
            }
            request.send(body.to_string())
        }
        None => {
            let mut request = agent.get(&url);
            if let Some(auth) = &auth {
                request = request.header("authorization", auth);
            }
            request.call()
        }
    };
    let mut response = response.with_context(|| format!("cannot reach freshet at {addr}"))?;
    let status = response.status();
    let answer = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(answer);
        bail!("{url}: {status}: {message}");
    }
    println!("{answer}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(traffic: &str, versions: &str) -> PipelineSpec {
        let text = format!(
            r#"
[[source]]
name = "s"
event_time = "ts"
entity = "k"

[[model]]
name = "m"
kind = "logistic_regression"
features = ["s.a", "s.b"]
label = {{ field = "y" }}

[model.serving]
traffic = {traffic}
versions = [{versions}]
"#
        );
        PipelineSpec::from_toml(&text, Path::new("p.toml")).expect("pipeline")
    }

    fn learner(spec: &PipelineSpec) -> Learner {
        let m = spec.models[0].get_ref();
        Learner::new(m, m.features.clone()).expect("learner")
    }

    #[test]
    fn kept_policies_win_until_the_file_changes_and_their_versions_are_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let spec0 = spec("\"latest\"", "");
        let mut learner = learner(&spec0);
        for _ in 0..3 {
            learner.publish().expect("publish");
        }
        let registries = HashMap::from([("m".to_owned(), learner.registry())]);
        let (starts, keeper) = serving_starts(&spec0, &registries, Some(&state)).expect("starts");
        assert_eq!(starts["m"].policy, TrafficPolicy::Latest);
        let keeper = keeper.expect("a keeper with a state dir");
        // pin version 3, then the learner moves on (and the process restarts)
        let v3: Arc<dyn ModelVersion> = Arc::new(ServedVersion(
            learner.registry().current().expect("version"),
        ));
        keeper
            .keep("m", TrafficPolicy::Pin(3), Some(&v3))
            .expect("kept");
        for _ in 0..5 {
            learner.publish().expect("publish");
        }
        let (starts, _) = serving_starts(&spec0, &registries, Some(&state)).expect("starts");
        assert_eq!(starts["m"].policy, TrafficPolicy::Pin(3));
        assert_eq!(
            starts["m"]
                .versions
                .iter()
                .map(|v| v.version())
                .collect::<Vec<_>>(),
            vec![3]
        );
        // an edited file policy wins over the kept one
        let spec1 = spec("{ shadow = 8 }", "");
        let (starts, _) = serving_starts(&spec1, &registries, Some(&state)).expect("starts");
        assert_eq!(starts["m"].policy, TrafficPolicy::Shadow(8));
        assert!(starts["m"].versions.is_empty());
        // without a state dir nothing is kept or read
        let (starts, keeper) = serving_starts(&spec0, &registries, None).expect("starts");
        assert_eq!(starts["m"].policy, TrafficPolicy::Latest);
        assert!(keeper.is_none());
    }

    #[test]
    fn command_line_policies_become_admin_bodies() {
        use serde_json::json;
        assert_eq!(policy_body("latest").expect("ok"), json!("latest"));
        assert_eq!(policy_body("rollback").expect("ok"), json!("rollback"));
        assert_eq!(policy_body("pin=12").expect("ok"), json!({"pin": 12}));
        assert_eq!(policy_body("shadow=3").expect("ok"), json!({"shadow": 3}));
        assert_eq!(
            policy_body("canary=12:10").expect("ok"),
            json!({"canary": {"version": 12, "percent": 10.0}})
        );
        assert_eq!(policy_body(r#"{"pin": 4}"#).expect("ok"), json!({"pin": 4}));
        for bad in ["pin=x", "canary=3", "newest", "canary=1:ten"] {
            assert!(policy_body(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_load_from_version_files_and_checkpoint_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec0 = spec("\"latest\"", "");
        let m = spec0.models[0].get_ref();
        let mut learner = Learner::with_options(
            m,
            m.features.clone(),
            LearnerOptions {
                checkpoint_dir: Some(dir.path().join("ckpt")),
                ..LearnerOptions::default()
            },
        )
        .expect("learner");
        learner.publish().expect("publish");
        learner.publish().expect("publish");
        learner.checkpoint().expect("checkpoint");
        let file = learner
            .registry()
            .current()
            .expect("version")
            .save(&dir.path().join("versions"))
            .expect("save");
        let text = format!(
            "\"{}\", \"{}\"",
            file.display(),
            dir.path().join("ckpt").display()
        );
        let spec1 = spec("{ pin = 2 }", &text);
        let registries = HashMap::from([("m".to_owned(), learner.registry())]);
        let (starts, _) = serving_starts(&spec1, &registries, None).expect("starts");
        assert_eq!(starts["m"].policy, TrafficPolicy::Pin(2));
        assert_eq!(starts["m"].versions.len(), 2);
        assert!(starts["m"].versions.iter().all(|v| v.version() == 2));

        let missing = spec("\"latest\"", &format!("\"{}\"", dir.path().display()));
        let err = serving_starts(&missing, &registries, None).expect_err("no checkpoint there");
        let text = format!("{err:#}");
        assert!(text.contains("[model.serving] versions"), "{text}");
        assert!(text.contains("without a checkpoint of model `m`"), "{text}");
    }
}

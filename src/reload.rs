//! Config reload (SIGHUP): the running sources keyed by id, a plan of which to stop, start or
//! keep for a new config, the settings that need a restart, and applying all that to the pipeline.

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;

use crate::analysis::actor::{Reconfigure, ShardActor};
use crate::analysis::shard::Policies;
use crate::config::{Config, Resolved, SourceConfig};
use crate::sources::route::Router;
use crate::sources::SourceActor;
use crate::status::{SourceStats, StatusBoard};

/// What to do with each source when going from `old` to `new`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SourcePlan {
    /// Indices in `new` of sources that run on untouched (same id, settings and position).
    pub keep: Vec<usize>,
    /// Indices in `new` of sources to start (new, or changed and restarted).
    pub start: Vec<usize>,
    /// Indices in `old` of sources to stop (removed, or changed and restarted).
    pub stop: Vec<usize>,
}

/// Works out the source changes. A source is kept only when its id, its settings and its index
/// are all the same; anything else is stopped and started again.
pub fn plan_sources(old: &[SourceConfig], new: &[SourceConfig]) -> SourcePlan {
    let mut plan = SourcePlan::default();
    for (i, n) in new.iter().enumerate() {
        match old.get(i) {
            // Unchanged = the same full source config at the same position (samples carry the
            // position for per-device source binding).
            Some(o) if o == n => plan.keep.push(i),
            _ => plan.start.push(i),
        }
    }
    for i in 0..old.len() {
        if !plan.keep.contains(&i) {
            plan.stop.push(i);
        }
    }
    plan
}

/// Top-level settings a reload cannot apply (they are read once at start). Names the ones that differ.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let differs = [
        ("node_id", old.node_id != new.node_id),
        ("data_dir", old.data_dir != new.data_dir),
        (
            "summary_interval",
            old.summary_interval != new.summary_interval,
        ),
        (
            "persist_interval",
            old.persist_interval != new.persist_interval,
        ),
        ("api", old.api != new.api),
        ("store", old.store != new.store),
        (
            "analysis.shards",
            old.analysis.shards != new.analysis.shards,
        ),
        ("analysis.queue", old.analysis.queue != new.analysis.queue),
        ("upstream", old.upstream != new.upstream),
        ("sink", old.sinks != new.sinks),
    ];
    differs
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
}

/// A source that is running.
struct Running {
    addr: Addr<SourceActor>,
    stats: Arc<SourceStats>,
}

/// The running pipeline pieces a reload changes.
pub struct Reloader {
    path: PathBuf,
    policies: Arc<Policies>,
    running: Vec<Running>,
    router: Router,
    shards: Vec<Addr<ShardActor>>,
    status: Arc<StatusBoard>,
}

/// What a successful reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub sources_started: usize,
    pub sources_stopped: usize,
    pub sources_kept: usize,
    pub devices: usize,
    pub devices_kept_state: usize,
    pub needs_restart: Vec<&'static str>,
}

/// A reload that changed nothing: the new file was rejected.
#[derive(Debug, thiserror::Error)]
#[error("config reload rejected, keeping the running config: {0}")]
pub struct Rejected(#[from] pub crate::config::ConfigError);

impl Reloader {
    /// Starts every source of the config; `status.sources` must list them in config order.
    pub fn start(
        path: PathBuf,
        policies: Arc<Policies>,
        router: Router,
        shards: Vec<Addr<ShardActor>>,
        status: Arc<StatusBoard>,
    ) -> Self {
        let stats = status.sources();
        let running = policies
            .resolved
            .config
            .sources
            .iter()
            .enumerate()
            .map(|(i, sc)| {
                let stats = stats
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(SourceStats::new(sc.id(), sc.kind())));
                Running {
                    addr: SourceActor::for_config(sc, i as u16, router.clone(), stats.clone())
                        .start(),
                    stats,
                }
            })
            .collect();
        Reloader {
            path,
            policies,
            running,
            router,
            shards,
            status,
        }
    }

    /// Reads the config file again and applies it; on any error the running config stays.
    pub async fn reload(&mut self) -> Result<ReloadReport, Rejected> {
        let resolved = crate::config::load_file(&self.path)?;
        Ok(self.apply(resolved).await)
    }

    /// Applies a validated config: sources first stopped, then shard policies, then new sources.
    pub async fn apply(&mut self, resolved: Resolved) -> ReloadReport {
        let old = &self.policies.resolved.config;
        let new = &resolved.config;
        let plan = plan_sources(&old.sources, &new.sources);
        let needs_restart = needs_restart(old, new);

        let mut old_running: Vec<Option<Running>> = std::mem::take(&mut self.running)
            .into_iter()
            .map(Some)
            .collect();
        for &i in &plan.stop {
            if let Some(r) = old_running.get_mut(i).and_then(Option::take) {
                r.stats.set_healthy(false);
                r.addr.do_send(crate::app::StopSource);
            }
        }

        let policies = Arc::new(Policies {
            source_ids: new.sources.iter().map(|s| s.id().to_string()).collect(),
            shards: self.policies.shards,
            resolved,
        });
        let (mut devices, mut kept) = (0, 0);
        for (i, s) in self.shards.iter().enumerate() {
            match s.send(Reconfigure(policies.clone())).await {
                Ok((d, k)) => {
                    devices += d;
                    kept += k;
                }
                Err(e) => {
                    tracing::error!(shard = i, error = %e, "shard did not take the new config")
                }
            }
        }

        let new_sources = &policies.resolved.config.sources;
        let mut running = Vec::with_capacity(new_sources.len());
        for (i, sc) in new_sources.iter().enumerate() {
            let kept_source = if plan.keep.contains(&i) {
                old_running.get_mut(i).and_then(Option::take)
            } else {
                None
            };
            let r = match kept_source {
                Some(r) => r,
                None => {
                    // Counters of a source that keeps its id and kind carry on.
                    let stats = self
                        .status
                        .source(sc.id())
                        .filter(|s| s.kind == sc.kind())
                        .unwrap_or_else(|| Arc::new(SourceStats::new(sc.id(), sc.kind())));
                    let addr =
                        SourceActor::for_config(sc, i as u16, self.router.clone(), stats.clone())
                            .start();
                    Running { addr, stats }
                }
            };
            running.push(r);
        }
        self.status
            .set_sources(running.iter().map(|r| r.stats.clone()).collect());
        self.running = running;
        self.policies = policies;
        ReloadReport {
            sources_started: plan.start.len(),
            sources_stopped: plan.stop.len(),
            sources_kept: plan.keep.len(),
            devices,
            devices_kept_state: kept,
            needs_restart,
        }
    }

    /// Stops every source (shutdown) and drops the router, so the shards' queues can close.
    pub fn stop_all(self) {
        for r in &self.running {
            r.addr.do_send(crate::app::StopSource);
        }
    }

    /// The config file this reloader reads.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// SIGHUP: reload, log what changed (or why the new file was rejected), tell systemd.
pub async fn on_sighup(r: &mut Reloader) {
    use crate::service::notify;
    notify::reloading();
    tracing::info!(config = %r.path().display(), "SIGHUP: reloading the config");
    match r.reload().await {
        Ok(rep) => {
            if !rep.needs_restart.is_empty() {
                tracing::warn!(
                    settings = %rep.needs_restart.join(", "),
                    "these settings changed but take effect only after a restart"
                );
            }
            tracing::info!(
                sources_started = rep.sources_started,
                sources_stopped = rep.sources_stopped,
                sources_kept = rep.sources_kept,
                devices = rep.devices,
                devices_kept_state = rep.devices_kept_state,
                "config reloaded"
            );
            notify::ready("running (config reloaded)");
        }
        Err(e) => {
            tracing::error!("{e}");
            notify::ready("running; the last config reload was rejected (see the log)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(toml: &str) -> Config {
        let text = format!("node_id = \"t\"\n{toml}");
        crate::config::parse_str(&text, std::path::Path::new("t.toml"))
            .expect("valid test config")
            .config
    }

    const A: &str =
        "[[source]]\nid = \"a\"\nkind = \"tcp\"\nmode = \"server\"\nlisten = \"127.0.0.1:1\"\n";
    const A2: &str =
        "[[source]]\nid = \"a\"\nkind = \"tcp\"\nmode = \"server\"\nlisten = \"127.0.0.1:2\"\n";
    const B: &str =
        "[[source]]\nid = \"b\"\nkind = \"tcp\"\nmode = \"server\"\nlisten = \"127.0.0.1:3\"\n";

    #[test]
    fn unchanged_sources_are_kept_changed_ones_restarted_removed_ones_stopped() {
        let old = sources(&format!("{A}{B}"));
        let same = plan_sources(&old.sources, &old.sources);
        assert_eq!(
            same,
            SourcePlan {
                keep: vec![0, 1],
                start: vec![],
                stop: vec![]
            }
        );

        let changed = sources(&format!("{A2}{B}"));
        let p = plan_sources(&old.sources, &changed.sources);
        assert_eq!(
            p,
            SourcePlan {
                keep: vec![1],
                start: vec![0],
                stop: vec![0]
            }
        );

        let removed = sources(B);
        // b moved from index 1 to 0: restarted, so its samples carry the right source index.
        let p = plan_sources(&old.sources, &removed.sources);
        assert_eq!(
            p,
            SourcePlan {
                keep: vec![],
                start: vec![0],
                stop: vec![0, 1]
            }
        );

        let added = sources(&format!("{A}{B}{}", A2.replace("\"a\"", "\"c\"")));
        let p = plan_sources(&old.sources, &added.sources);
        assert_eq!(
            p,
            SourcePlan {
                keep: vec![0, 1],
                start: vec![2],
                stop: vec![]
            }
        );
    }

    #[test]
    fn settings_read_once_at_start_are_named() {
        let old = sources(A);
        let new = sources(&format!(
            "data_dir = \"/elsewhere\"\n[api]\nlisten = \"127.0.0.1:9\"\n{A}"
        ));
        assert_eq!(needs_restart(&old, &new), vec!["data_dir", "api"]);
        assert!(needs_restart(&old, &sources(B)).is_empty());
    }
}

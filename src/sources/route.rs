//! The router: picks the analyzer shard that owns a device (stable hash of its id) and carries
//! per-shard batches from a source to the shards over bounded channels (back-pressure, no drops).

use tokio::sync::mpsc;

use crate::model::{Batch, Millis, SampleSink};

/// One batch of samples from one source, for one shard.
#[derive(Debug)]
pub struct Ingest {
    /// Index of the source in the config (for per-device source binding).
    pub source: u16,
    pub batch: Batch,
}

/// Cheap, cloneable handle every source holds.
#[derive(Clone, Debug)]
pub struct Router {
    shards: Vec<mpsc::Sender<Ingest>>,
    /// Where an http source without a listener of its own plugs into the API (`/api/ingest`).
    api_ingest: super::http::ApiSlot,
    ts: TsRule,
}

/// Bounds on a sample's own timestamp (`[input]`), checked as it is pushed: two comparisons.
#[derive(Clone, Copy, Debug)]
pub struct TsRule {
    /// Earliest accepted timestamp.
    pub min: Millis,
    /// How far past the appliance clock a timestamp may be (while the clock is plausible).
    pub max_future: Millis,
    /// Out-of-bounds timestamps are replaced by the receive time instead of rejected.
    pub restamp: bool,
}

impl TsRule {
    pub fn new(c: &crate::config::InputConfig) -> Self {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        TsRule {
            min: crate::clock::BUILD_UNIX_MS.saturating_sub(ms(c.max_past.0)),
            max_future: ms(c.max_future.0),
            restamp: c.ts_policy == crate::config::TsPolicy::Receive,
        }
    }
}

impl TsRule {
    /// No bounds (embedders, tests); the appliance sets `[input]` with `Router::with_ts_rule`.
    pub const ANY: TsRule = TsRule {
        min: Millis::MIN,
        max_future: Millis::MAX,
        restamp: false,
    };
}

/// The shards are gone: the appliance is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("analysis stopped")]
pub struct Closed;

/// FNV-1a: stable across runs and builds, so a device keeps its shard (and state) after restart.
pub fn shard_of(device: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

impl Router {
    pub fn new(shards: Vec<mpsc::Sender<Ingest>>) -> Self {
        Router {
            shards,
            api_ingest: super::http::ApiSlot::default(),
            ts: TsRule::ANY,
        }
    }

    /// The timestamp bounds every sink made from now on applies.
    pub fn with_ts_rule(mut self, ts: TsRule) -> Self {
        self.ts = ts;
        self
    }

    /// The API's `/api/ingest` slot, shared by the API and the http source that fills it.
    pub fn api_ingest(&self) -> super::http::ApiSlot {
        self.api_ingest.clone()
    }

    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// A sink that fills one batch per shard; `default_ts` is used for samples without their own.
    pub fn sink(&self, source: u16) -> RoutingSink {
        RoutingSink {
            router: self.clone(),
            source,
            default_ts: 0,
            pushed: 0,
            clock: crate::clock::ClockGuard::default(),
            unsynced: false,
            unsynced_pushed: 0,
            ts: self.ts,
            ts_max: Millis::MAX,
            bad_ts: 0,
            restamped: 0,
            batches: (0..self.shards.len()).map(|_| Batch::default()).collect(),
        }
    }
}

/// Collects decoded samples into per-shard batches; `flush` hands them over.
pub struct RoutingSink {
    router: Router,
    source: u16,
    default_ts: Millis,
    pushed: u64,
    batches: Vec<Batch>,
    /// Clock sanity, checked once per read buffer (see `clock.rs`).
    clock: crate::clock::ClockGuard,
    unsynced: bool,
    unsynced_pushed: u64,
    ts: TsRule,
    /// Latest accepted timestamp: receive time + `max_future` (no bound while the clock is not
    /// plausible).
    ts_max: Millis,
    bad_ts: u64,
    restamped: u64,
}

impl RoutingSink {
    /// Receive time for samples that carry no timestamp of their own.
    /// Also the clock check: samples received while the wall clock is implausible (before the
    /// build) are counted, and on a clock jump the samples still pending here are corrected.
    pub fn set_default_ts(&mut self, ts: Millis) {
        let r = self.clock.observe(ts, std::time::Instant::now());
        if let Some(step) = r.jump {
            let mut corrected = 0;
            if self.default_ts != 0 {
                for b in &mut self.batches {
                    corrected += b.shift_ts(self.default_ts, step);
                }
            }
            crate::clock::note_jump(step, ts, corrected);
        }
        self.unsynced = !r.synced;
        self.default_ts = ts;
        self.ts_max = if r.synced {
            ts.saturating_add(self.ts.max_future)
        } else {
            Millis::MAX
        };
    }

    /// Samples rejected / re-stamped for an out-of-bounds timestamp since the last call.
    pub fn take_bad_ts(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.bad_ts),
            std::mem::take(&mut self.restamped),
        )
    }

    /// Samples pushed since the last `take_pushed`.
    pub fn take_pushed(&mut self) -> u64 {
        std::mem::take(&mut self.pushed)
    }

    pub fn is_empty(&self) -> bool {
        self.batches.iter().all(Batch::is_empty)
    }

    /// Sends every non-empty batch to its shard, waiting while a shard's queue is full.
    pub async fn flush(&mut self) -> Result<(), Closed> {
        crate::clock::count_unsynced(std::mem::take(&mut self.unsynced_pushed));
        for (i, b) in self.batches.iter_mut().enumerate() {
            if b.is_empty() {
                continue;
            }
            let batch = std::mem::replace(b, Batch::with_capacity(b.len()));
            self.router.shards[i]
                .send(Ingest {
                    source: self.source,
                    batch,
                })
                .await
                .map_err(|_| Closed)?;
        }
        Ok(())
    }
}

impl RoutingSink {
    /// Sends every non-empty batch only once every shard concerned has room for it: all or
    /// nothing (an HTTP request is answered 204 only when all its samples are in). Dropping
    /// the future while it waits sends nothing; the batches stay here (`discard` drops them).
    pub async fn send_all(&mut self) -> Result<(), Closed> {
        let RoutingSink {
            router,
            source,
            batches,
            unsynced_pushed,
            ..
        } = self;
        let mut permits = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            if !b.is_empty() {
                permits.push((i, router.shards[i].reserve().await.map_err(|_| Closed)?));
            }
        }
        crate::clock::count_unsynced(std::mem::take(unsynced_pushed));
        for (i, permit) in permits {
            let b = &mut batches[i];
            let batch = std::mem::replace(b, Batch::with_capacity(b.len()));
            permit.send(Ingest {
                source: *source,
                batch,
            });
        }
        Ok(())
    }

    /// Drops the pending samples (a request that was refused); returns how many were dropped.
    pub fn discard(&mut self) -> u64 {
        self.batches.iter_mut().for_each(Batch::clear);
        self.unsynced_pushed = 0;
        self.take_pushed()
    }
}

impl SampleSink for RoutingSink {
    fn push(&mut self, device: &str, metric: &str, ts: Option<Millis>, value: f64) {
        let ts = match ts {
            Some(t) if t > self.ts_max || t < self.ts.min => {
                if !self.ts.restamp {
                    self.bad_ts += 1;
                    return;
                }
                self.restamped += 1;
                None
            }
            t => t,
        };
        let shard = shard_of(device, self.batches.len());
        self.pushed += 1;
        if ts.is_none() && self.unsynced {
            self.unsynced_pushed += 1;
        }
        if let Some(b) = self.batches.get_mut(shard) {
            b.push(device, metric, ts.unwrap_or(self.default_ts), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_of_is_stable_and_spreads() {
        assert_eq!(shard_of("dev0001", 4), shard_of("dev0001", 4));
        let mut seen = [0usize; 4];
        for i in 0..1000 {
            seen[shard_of(&format!("dev{i:04}"), 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
    }

    #[tokio::test]
    async fn sink_routes_each_device_to_one_shard_in_order() {
        let (tx0, mut rx0) = mpsc::channel(4);
        let (tx1, mut rx1) = mpsc::channel(4);
        let r = Router::new(vec![tx0, tx1]);
        let mut s = r.sink(3);
        s.set_default_ts(99);
        for i in 0..20 {
            s.push(
                &format!("d{}", i % 5),
                "m",
                if i % 2 == 0 { Some(i) } else { None },
                i as f64,
            );
        }
        s.flush().await.expect("flush");
        drop(s);
        drop(r);
        let mut got = Vec::new();
        for rx in [&mut rx0, &mut rx1] {
            while let Some(ing) = rx.recv().await {
                assert_eq!(ing.source, 3);
                for x in ing.batch.iter() {
                    got.push((x.device.to_string(), x.ts, x.value));
                }
            }
        }
        assert_eq!(got.len(), 20);
        for d in 0..5 {
            let dev = format!("d{d}");
            let vals: Vec<f64> = got.iter().filter(|g| g.0 == dev).map(|g| g.2).collect();
            let expect: Vec<f64> = (0..20).filter(|i| i % 5 == d).map(|i| i as f64).collect();
            assert_eq!(vals, expect, "device {dev} keeps arrival order");
        }
        assert!(got.iter().all(|g| g.1 == 99 || g.1 == g.2 as i64));
    }

    #[tokio::test]
    async fn a_clock_jump_corrects_pending_receive_times_and_unsynced_samples_are_counted() {
        let (tx, mut rx) = mpsc::channel(4);
        let r = Router::new(vec![tx]);
        let mut s = r.sink(0);
        // Booted without RTC: the wall clock says 1970 (plus uptime).
        let boot = 30_000;
        s.set_default_ts(boot);
        s.push("d", "m", None, 1.0);
        s.push("d", "m", Some(5), 2.0); // the device's own timestamp is left alone
        let before = crate::clock::view(0).unsynced_samples;
        // NTP steps the clock before the batch was sent.
        let real = crate::clock::BUILD_UNIX_MS + 1_000;
        s.set_default_ts(real);
        s.push("d", "m", None, 3.0);
        s.flush().await.expect("flush");
        assert!(crate::clock::view(0).unsynced_samples > before);
        let got = rx.recv().await.expect("batch");
        let ts: Vec<Millis> = got.batch.iter().map(|x| x.ts).collect();
        assert_eq!(ts[1], 5);
        assert_eq!(ts[2], real);
        // Corrected by the step: within the few ms between the two readings of the real time.
        assert!((ts[0] - real).abs() < 1_000, "{ts:?}");
        assert!(crate::clock::view(0).jumps >= 1);
    }
}

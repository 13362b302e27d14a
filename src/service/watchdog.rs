//! Liveness of the pipeline: a `Ping` every actor answers from its mailbox; the watchdog task
//! pings shards, store and hub and sends WATCHDOG=1 only when all of them answered in time.

use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;

use crate::analysis::actor::ShardActor;
use crate::hub::Hub;
use crate::store::StoreActor;

/// "Are you processing your mailbox?" An actor answers when it gets to the message.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Ping;

impl Handler<Ping> for ShardActor {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

impl Handler<Ping> for StoreActor {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

impl Handler<Ping> for Hub {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

/// One actor the watchdog watches, with a name for the log.
pub struct Watched {
    pub name: String,
    pub addr: Recipient<Ping>,
}

/// Pings every actor at once; `Err` lists the ones that did not answer within `timeout`.
pub async fn check(actors: &[Watched], timeout: Duration) -> Result<(), Vec<String>> {
    let answers = join_all(
        actors
            .iter()
            .map(|w| tokio::time::timeout(timeout, w.addr.send(Ping))),
    )
    .await;
    let silent: Vec<String> = actors
        .iter()
        .zip(answers)
        .filter(|(_, a)| !matches!(a, Ok(Ok(()))))
        .map(|(w, _)| w.name.clone())
        .collect();
    if silent.is_empty() {
        Ok(())
    } else {
        Err(silent)
    }
}

/// Feeds systemd's watchdog every `interval / 2` while every actor answers within `interval / 3`.
/// A wedged actor stops the keep-alives, and systemd restarts the service after `interval`.
pub async fn run(actors: Vec<Watched>, interval: Duration) {
    let timeout = interval / 3;
    let mut tick = tokio::time::interval(interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match check(&actors, timeout).await {
            Ok(()) => super::notify::watchdog(),
            Err(silent) => tracing::error!(
                actors = %silent.join(","),
                timeout = ?timeout,
                "pipeline actors did not answer; not feeding the systemd watchdog"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An actor whose handler blocks its arbiter thread, like a wedged shard would.
    struct Wedged;
    impl Actor for Wedged {
        type Context = Context<Self>;
    }
    impl Handler<Ping> for Wedged {
        type Result = ();
        fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
    }
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Block(Duration);
    impl Handler<Block> for Wedged {
        type Result = ();
        fn handle(&mut self, m: Block, _: &mut Self::Context) {
            std::thread::sleep(m.0);
        }
    }

    #[actix_rt::test]
    async fn all_answer_then_a_wedged_actor_is_named() {
        let arb_a = Arbiter::new();
        let arb_b = Arbiter::new();
        let a = Wedged::start_in_arbiter(&arb_a.handle(), |_| Wedged);
        let b = Wedged::start_in_arbiter(&arb_b.handle(), |_| Wedged);
        let actors = vec![
            Watched {
                name: "a".into(),
                addr: a.clone().recipient(),
            },
            Watched {
                name: "b".into(),
                addr: b.clone().recipient(),
            },
        ];
        assert_eq!(check(&actors, Duration::from_secs(2)).await, Ok(()));
        b.do_send(Block(Duration::from_millis(800)));
        assert_eq!(
            check(&actors, Duration::from_millis(200)).await,
            Err(vec!["b".to_string()])
        );
        // Once it is unstuck it answers again.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(check(&actors, Duration::from_secs(2)).await, Ok(()));
        // A stopped actor counts as not answering.
        arb_a.stop();
        let _ = arb_a.join();
        assert_eq!(
            check(&actors, Duration::from_millis(200)).await,
            Err(vec!["a".to_string()])
        );
        arb_b.stop();
    }
}

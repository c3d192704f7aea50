//! One suite, two brokers: RabbitMQ (the real server) and the in-memory broker of
//! embedded mode must deliver, redeliver, limit and dead-letter alike.
use std::time::Duration;
use tsst_actors::broker::{AmqpBroker, Broker, Consumer, Delivery, MemoryBroker};
use tsst_messages::{Envelope, ExpandTask, NodeId, Role, ScoreTask, Task, Topology, VerifyTask};

mod common;

fn amqp_url() -> String {
    std::env::var("TSST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// What the suite needs beyond the trait: a look at dead letters and raw publishing.
trait Harness: Broker {
    async fn dead_letters(&self, role: Role) -> Vec<(Vec<u8>, String)>;
    async fn publish_raw(&self, role: Role, data: &[u8]);
    async fn cleanup(&self) {}
}

impl Harness for MemoryBroker {
    async fn dead_letters(&self, role: Role) -> Vec<(Vec<u8>, String)> {
        MemoryBroker::dead_letters(self, role)
    }
    async fn publish_raw(&self, role: Role, data: &[u8]) {
        MemoryBroker::publish_raw(self, role, data.to_vec())
    }
}

impl Harness for AmqpBroker {
    async fn dead_letters(&self, role: Role) -> Vec<(Vec<u8>, String)> {
        let dlq = self.topology().dead_letter_queue(role);
        let mut c = self.consume_queue(&dlq, 16).await.unwrap();
        let mut out = Vec::new();
        while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(500), c.next()).await
        {
            out.push((d.data().to_vec(), d.error_header().unwrap_or_default()));
            d.ack().await.unwrap();
        }
        out
    }
    async fn publish_raw(&self, role: Role, data: &[u8]) {
        AmqpBroker::publish_raw(self, &self.topology().queue(role), data)
            .await
            .unwrap()
    }
    async fn cleanup(&self) {
        self.delete_topology().await.unwrap();
    }
}

/// A namespace of its own, so concurrent tests and real deployments never meet.
async fn amqp(test: &str) -> AmqpBroker {
    let ns = format!("tsst-test-{test}-{}", std::process::id());
    let broker = AmqpBroker::connect(&amqp_url(), test, Topology::new(&ns))
        .await
        .expect("RabbitMQ must be running (see .ci/run)");
    broker.declare().await.unwrap();
    broker
}

fn expand(i: u32) -> Envelope<Task> {
    Task::Expand(ExpandTask {
        run: "r".into(),
        question: format!("q{i}"),
        round: i,
        node: NodeId::root("r", "q"),
    })
    .envelope()
}

async fn roundtrip<B: Harness>(broker: B) {
    broker.declare().await.unwrap(); // twice is harmless
    let tasks: Vec<_> = (0..50).map(expand).collect();
    broker.publish(&tasks).await.unwrap();
    let mut c = broker.consume(Role::Generator, 16).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..50 {
        let d = common::next_delivery(&mut c).await;
        assert!(!d.redelivered());
        got.push(Envelope::<Task>::decode(d.data()).unwrap());
        d.ack().await.unwrap();
    }
    assert_eq!(got, tasks, "order and content survive the broker");
    let nothing = tokio::time::timeout(Duration::from_millis(300), c.next()).await;
    assert!(nothing.is_err(), "every message was delivered once");
    broker.cleanup().await;
}

async fn requeued_work_comes_back<B: Harness>(broker: B) {
    let task = Task::Verify(VerifyTask {
        run: "r".into(),
        question: "q".into(),
    })
    .envelope();
    broker.publish(std::slice::from_ref(&task)).await.unwrap();
    let mut c = broker.consume(Role::Verifier, 4).await.unwrap();
    let d = common::next_delivery(&mut c).await;
    assert!(!d.redelivered());
    assert_eq!(d.attempt(), 1);
    d.requeue().await.unwrap();
    let d = common::next_delivery(&mut c).await;
    assert!(d.redelivered());
    assert_eq!(d.attempt(), 2, "the delivery is counted");
    d.requeue().await.unwrap();
    let d = common::next_delivery(&mut c).await;
    assert_eq!(d.attempt(), 3);
    assert_eq!(Envelope::<Task>::decode(d.data()).unwrap(), task);
    d.ack().await.unwrap();
    broker.cleanup().await;
}

async fn prefetch_bounds_unsettled<B: Harness>(broker: B) {
    broker
        .publish(&(0..5).map(expand).collect::<Vec<_>>())
        .await
        .unwrap();
    let mut c = broker.consume(Role::Generator, 2).await.unwrap();
    let a = common::next_delivery(&mut c).await;
    let _b = common::next_delivery(&mut c).await;
    let third = tokio::time::timeout(Duration::from_millis(400), c.next()).await;
    assert!(third.is_err(), "a third delivery beyond prefetch 2");
    a.ack().await.unwrap();
    let _c = common::next_delivery(&mut c).await;
    broker.cleanup().await;
}

async fn dead_letters_carry_the_reason<B: Harness>(broker: B) {
    let mut c = broker.consume(Role::Scorer, 4).await.unwrap();
    let bogus = br#"{"schema":1,"id":"x","body":{"kind":"score","run":7}}"#;
    broker.publish_raw(Role::Scorer, bogus).await;
    let d = common::next_delivery(&mut c).await;
    let err = Envelope::<Task>::decode(d.data()).unwrap_err();
    d.dead_letter(&err.to_string()).await.unwrap();
    // A task of the right shape still flows after the bad one.
    let ok = Task::Score(ScoreTask {
        run: "r".into(),
        question: "q".into(),
        round: 0,
        parent: NodeId(1),
        children: vec![],
        steps: Vec::new(),
    })
    .envelope();
    broker.publish(std::slice::from_ref(&ok)).await.unwrap();
    let d = common::next_delivery(&mut c).await;
    assert_eq!(Envelope::<Task>::decode(d.data()).unwrap(), ok);
    d.ack().await.unwrap();
    let dead = broker.dead_letters(Role::Scorer).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, bogus.to_vec(), "the payload is kept as it was");
    assert!(dead[0].1.contains("malformed"), "{}", dead[0].1);
    broker.cleanup().await;
}

async fn a_batch_is_acked_at_once<B: Harness>(broker: B) {
    broker
        .publish(&(0..10).map(expand).collect::<Vec<_>>())
        .await
        .unwrap();
    let mut c = broker.consume(Role::Generator, 16).await.unwrap();
    let mut batch = Vec::new();
    for _ in 0..10 {
        batch.push(common::next_delivery(&mut c).await);
    }
    <C<B> as Delivery>::ack_all(batch).await.unwrap();
    drop(c);
    // A fresh consumer finds nothing: every delivery of the batch was acked.
    let mut c = broker.consume(Role::Generator, 16).await.unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(500), c.next()).await;
    assert!(nothing.is_err(), "a delivery of the acked batch came back");
    broker.cleanup().await;
}

type C<B> = <<B as Broker>::Consumer as Consumer>::Delivery;

#[tokio::test]
async fn memory_batch_ack() {
    a_batch_is_acked_at_once(MemoryBroker::new()).await;
}
#[tokio::test]
async fn amqp_batch_ack() {
    a_batch_is_acked_at_once(amqp("batchack").await).await;
}

#[tokio::test]
async fn memory_roundtrip() {
    roundtrip(MemoryBroker::new()).await;
}
#[tokio::test]
async fn amqp_roundtrip() {
    roundtrip(amqp("roundtrip").await).await;
}
#[tokio::test]
async fn memory_requeue() {
    requeued_work_comes_back(MemoryBroker::new()).await;
}
#[tokio::test]
async fn amqp_requeue() {
    requeued_work_comes_back(amqp("requeue").await).await;
}
#[tokio::test]
async fn memory_prefetch() {
    prefetch_bounds_unsettled(MemoryBroker::new()).await;
}
#[tokio::test]
async fn amqp_prefetch() {
    prefetch_bounds_unsettled(amqp("prefetch").await).await;
}
#[tokio::test]
async fn memory_dead_letters() {
    dead_letters_carry_the_reason(MemoryBroker::new()).await;
}
#[tokio::test]
async fn amqp_dead_letters() {
    dead_letters_carry_the_reason(amqp("deadletter").await).await;
}

/// A dead-lettered copy keeps the properties it was published with.
#[tokio::test]
async fn amqp_dead_letters_keep_the_message_id() {
    let broker = amqp("deadletter-id").await;
    let task = expand(3);
    broker.publish(std::slice::from_ref(&task)).await.unwrap();
    let mut c = broker.consume(Role::Generator, 4).await.unwrap();
    let d = common::next_delivery(&mut c).await;
    assert_eq!(d.message_id().as_deref(), Some(task.id.as_str()));
    d.dead_letter("test reason").await.unwrap();
    let dlq = broker.topology().dead_letter_queue(Role::Generator);
    let mut dead = broker.consume_queue(&dlq, 4).await.unwrap();
    let d = common::next_delivery(&mut dead).await;
    assert_eq!(d.message_id().as_deref(), Some(task.id.as_str()));
    assert_eq!(d.error_header().as_deref(), Some("test reason"));
    d.ack().await.unwrap();
    broker.cleanup().await;
}

/// A worker that dies holding a delivery: its connection closes and another consumer
/// gets the message, flagged as redelivered.
#[tokio::test]
async fn amqp_connection_loss_redelivers() {
    let broker = amqp("connloss").await;
    let task = expand(1);
    broker.publish(std::slice::from_ref(&task)).await.unwrap();
    let doomed = AmqpBroker::connect(&amqp_url(), "doomed", broker.topology().clone())
        .await
        .unwrap();
    let mut c = doomed.consume(Role::Generator, 1).await.unwrap();
    let d = common::next_delivery(&mut c).await;
    assert!(!d.redelivered());
    doomed.close().await;
    let mut c = broker.consume(Role::Generator, 1).await.unwrap();
    let d = common::next_delivery(&mut c).await;
    assert!(d.redelivered());
    assert_eq!(Envelope::<Task>::decode(d.data()).unwrap(), task);
    d.ack().await.unwrap();
    broker.cleanup().await;
}

#[tokio::test]
async fn memory_dropped_delivery_is_redelivered() {
    let broker = MemoryBroker::new();
    broker.publish(&[expand(1)]).await.unwrap();
    let mut c = broker.consume(Role::Generator, 1).await.unwrap();
    drop(common::next_delivery(&mut c).await);
    assert!(common::next_delivery(&mut c).await.redelivered());
}

/// A broker that goes silent without closing the connection (the state lapin waits in
/// for ever): a publish fails within the bounded wait instead of hanging, and the next
/// one goes out on a new connection once the broker answers again.
#[tokio::test]
async fn a_silent_broker_fails_a_publish_in_bounded_time_and_the_next_reconnects() {
    let ns = format!("tsst-test-silent-{}", std::process::id());
    let url = amqp_url();
    let port: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(5672);
    let proxy = common::FreezableProxy::start(port);
    let proxied = url.replace(&format!(":{port}/"), &format!(":{}/", proxy.port));
    let broker = AmqpBroker::connect(&proxied, "silent", Topology::new(&ns))
        .await
        .expect("RabbitMQ must be running (see .ci/run)");
    broker.declare().await.unwrap();
    broker.publish(&[expand(1)]).await.unwrap();

    proxy.freeze(true);
    let started = std::time::Instant::now();
    let silent = tokio::time::timeout(Duration::from_secs(60), broker.publish(&[expand(2)]))
        .await
        .expect("a publish to a silent broker must not hang");
    assert!(
        matches!(
            silent,
            Err(tsst_actors::broker::BrokerError::TimedOut { .. })
        ),
        "{silent:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    proxy.freeze(false);
    broker.publish(&[expand(3)]).await.unwrap();
    let mut c = broker.consume(Role::Generator, 16).await.unwrap();
    let mut rounds = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(2), c.next()).await {
        let env = Envelope::<Task>::decode(d.data()).unwrap();
        if let Task::Expand(t) = env.body {
            rounds.push(t.round);
        }
        d.ack().await.unwrap();
    }
    // The silent publish may still have reached the queue once the old connection
    // woke up: at least once, never lost.
    assert!(rounds.contains(&1) && rounds.contains(&3), "{rounds:?}");
    broker.cleanup().await;
}

//! Round trips through the real RabbitMQ: topology, confirmed publishing, consuming,
//! acking and dead-lettering with a reason.
use std::time::Duration;
use tsst_actors::broker::{AmqpBroker, AmqpConsumer, AmqpDelivery};
use tsst_messages::{Envelope, ExpandTask, NodeId, Role, Task, Topology, VerifyTask};

fn amqp_url() -> String {
    std::env::var("TSST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A namespace of its own, so concurrent tests and real deployments never meet.
async fn broker(test: &str) -> AmqpBroker {
    let ns = format!("tsst-test-{test}-{}", std::process::id());
    let broker = AmqpBroker::connect(&amqp_url(), test, Topology::new(&ns))
        .await
        .expect("RabbitMQ must be running (see .ci/run)");
    broker.declare_topology().await.unwrap();
    broker
}

async fn next(consumer: &mut AmqpConsumer) -> AmqpDelivery {
    tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery within 10 s")
        .expect("consumer open")
        .expect("delivery ok")
}

fn expand(round: u32) -> Envelope<Task> {
    Task::Expand(ExpandTask {
        run: "r".into(),
        question: format!("q{round}"),
        round,
        node: NodeId::root("r", "q"),
    })
    .envelope()
}

#[tokio::test]
async fn publish_confirm_consume_ack() {
    let broker = broker("roundtrip").await;
    // Declaring again from another process must be harmless.
    broker.declare_topology().await.unwrap();

    let tasks: Vec<_> = (0..50).map(expand).collect();
    broker.publish_tasks(&tasks).await.unwrap();
    let queue = broker.topology().queue(Role::Generator);
    assert_eq!(broker.queue_depth(&queue).await.unwrap(), 50);

    let mut consumer = broker.consume(Role::Generator, 16).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..50 {
        let d = next(&mut consumer).await;
        assert!(!d.redelivered);
        got.push(Envelope::<Task>::decode(&d.data).unwrap());
        d.ack().await.unwrap();
    }
    assert_eq!(got, tasks, "order and content survive the broker");
    drop(consumer);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(broker.queue_depth(&queue).await.unwrap(), 0, "all acked");
    broker.delete_topology().await.unwrap();
}

#[tokio::test]
async fn unacked_work_is_redelivered() {
    let broker = broker("redeliver").await;
    let task = Task::Verify(VerifyTask {
        run: "r".into(),
        question: "q".into(),
    })
    .envelope();
    broker
        .publish_tasks(std::slice::from_ref(&task))
        .await
        .unwrap();

    let mut first = broker.consume(Role::Verifier, 1).await.unwrap();
    let d = next(&mut first).await;
    assert!(!d.redelivered);
    // The worker goes away without acking: its channel closes.
    drop(d);
    drop(first);

    let other = AmqpBroker::connect(&amqp_url(), "other", broker.topology().clone())
        .await
        .unwrap();
    broker.close().await;
    let mut second = other.consume(Role::Verifier, 1).await.unwrap();
    let d = next(&mut second).await;
    assert!(d.redelivered);
    assert_eq!(Envelope::<Task>::decode(&d.data).unwrap(), task);
    d.ack().await.unwrap();
    other.delete_topology().await.unwrap();
}

#[tokio::test]
async fn dead_letters_carry_the_reason() {
    let broker = broker("deadletter").await;
    let mut consumer = broker.consume(Role::Scorer, 4).await.unwrap();
    // A malformed payload, published raw as a foreign producer might.
    let bogus = Envelope::new("bogus", serde_json::json!({"kind": "score", "run": 7}));
    let bytes = bogus.encode().unwrap();
    let raw = AmqpBroker::connect(&amqp_url(), "raw", broker.topology().clone())
        .await
        .unwrap();
    raw.publish_raw(&broker.topology().queue(Role::Scorer), &bytes)
        .await
        .unwrap();

    let d = next(&mut consumer).await;
    let err = Envelope::<Task>::decode(&d.data).unwrap_err();
    d.dead_letter(&broker, Role::Scorer, &err.to_string())
        .await
        .unwrap();

    let dlq = broker.topology().dead_letter_queue(Role::Scorer);
    let mut dead = broker.consume_queue(&dlq, 1).await.unwrap();
    let d = next(&mut dead).await;
    assert_eq!(d.data, bytes, "the payload is kept as it was");
    let reason = d.error_header().expect("reason header");
    assert!(reason.contains("malformed"), "{reason}");
    d.ack().await.unwrap();
    broker.delete_topology().await.unwrap();
}

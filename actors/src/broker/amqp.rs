//! RabbitMQ through lapin: the topology, confirmed publishing, consuming with
//! per-consumer prefetch, and dead-lettering with a reason.
//!
//! A lost connection is re-established on next use, and consumers subscribe again
//! with backoff: a broker restart pauses a worker, it never stops it. Deliveries taken
//! on the lost channel cannot be settled any more; the broker requeued them when the
//! channel died, and the outbox makes their second processing harmless.
use super::{Broker, BrokerError, Consumer, Delivery};
use crate::metrics::{ACKED, CONSUMED, DEAD_LETTERED, PUBLISHED, REQUEUED};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tsst_messages::{
    Envelope, Event, Role, Task, Topology, DELIVERY_LIMIT, HEADER_ERROR, HEADER_REJECTED_BY,
};

/// The longest a connection handshake, a subscription or a publisher confirm may
/// take. lapin waits for ever on a connection that died without closing (a broker
/// that went away mid-handshake, a confirm the restarted broker never sends), and a
/// role waiting there stalls without a word; past this the link counts as lost and
/// is opened again.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// `fut`, or `BrokerError::TimedOut` naming `what` once `ANSWER_WITHIN` has passed.
async fn bounded<T>(
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    tokio::time::timeout(ANSWER_WITHIN, fut)
        .await
        .unwrap_or(Err(BrokerError::TimedOut {
            what,
            secs: ANSWER_WITHIN.as_secs(),
        }))
}

/// Persistent delivery, so a broker restart loses no task.
const DELIVERY_MODE_PERSISTENT: u8 = 2;

/// Numbers every subscription of the process. Delivery tags count per channel, and
/// channel ids start again at 1 on a new connection, so neither tells the deliveries
/// of a lost channel from those of its successor; this does.
static SUBSCRIPTIONS: AtomicU64 = AtomicU64::new(0);

/// One connection with a confirm-mode channel for publishing. Consumers get channels
/// of their own so a slow consumer never holds up publishing.
#[derive(Clone)]
pub struct AmqpBroker {
    shared: Arc<Shared>,
}

struct Shared {
    /// May carry credentials: only ever shown through `redact_url`.
    url: String,
    name: String,
    topology: Topology,
    link: tokio::sync::Mutex<Arc<Link>>,
    /// Set by `close`: consumers then end instead of subscribing again.
    closed: AtomicBool,
}

/// One live connection and its publishing channel.
struct Link {
    conn: Connection,
    publisher: Channel,
    /// Set when the broker stopped answering on it (a confirm timed out): the next
    /// use opens a new link even though lapin still calls this one connected.
    stalled: AtomicBool,
}

impl Link {
    async fn open(url: &str, name: &str) -> Result<Link, BrokerError> {
        bounded("connecting", async {
            let props = ConnectionProperties::default().with_connection_name(name.into());
            let conn = Connection::connect(url, props)
                .await
                .map_err(|e| BrokerError::Connect(tsst_config::redact_url(url), e))?;
            let publisher = conn.create_channel().await?;
            publisher
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok(Link {
                conn,
                publisher,
                stalled: AtomicBool::new(false),
            })
        })
        .await
    }

    fn usable(&self) -> bool {
        !self.stalled.load(Ordering::SeqCst)
            && self.conn.status().connected()
            && self.publisher.status().connected()
    }

    /// `fut` (a publish and its confirms on this link), bounded; a timeout marks the
    /// link stalled so that the next use connects again.
    async fn confirmed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        let out = bounded("a publisher confirm", fut).await;
        if matches!(out, Err(BrokerError::TimedOut { .. })) {
            tracing::warn!("RabbitMQ stopped confirming on this connection; it will be replaced");
            self.stalled.store(true, Ordering::SeqCst);
        }
        out
    }
}

/// A message taken from a queue; ack it only once its effect is committed.
pub struct AmqpDelivery {
    inner: lapin::message::Delivery,
    broker: AmqpBroker,
    role: Option<Role>,
    /// The subscription (channel) it came on: acks go per subscription.
    subscription: u64,
}

/// A consumer on one queue; it subscribes again when its channel is lost.
pub struct AmqpConsumer {
    stream: lapin::Consumer,
    channel: Channel,
    subscription: u64,
    broker: AmqpBroker,
    role: Option<Role>,
    queue: String,
    prefetch: u16,
}

impl AmqpBroker {
    /// Connects; `name` shows in the RabbitMQ management UI to tell workers apart.
    pub async fn connect(url: &str, name: &str, topology: Topology) -> Result<Self, BrokerError> {
        let link = Link::open(url, name).await?;
        Ok(AmqpBroker {
            shared: Arc::new(Shared {
                url: url.to_owned(),
                name: name.to_owned(),
                topology,
                link: tokio::sync::Mutex::new(Arc::new(link)),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The live link, connecting again (once) if the last one was lost.
    async fn link(&self) -> Result<Arc<Link>, BrokerError> {
        let mut link = self.shared.link.lock().await;
        if !link.usable() {
            tracing::warn!(broker = %tsst_config::redact_url(&self.shared.url), "connection to RabbitMQ lost; reconnecting");
            let old = std::mem::replace(
                &mut *link,
                Arc::new(Link::open(&self.shared.url, &self.shared.name).await?),
            );
            // A stalled connection may still be open at the broker, holding deliveries
            // unacked: closed so that they go back to their queues.
            if old.conn.status().connected() {
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(ANSWER_WITHIN, old.conn.close(320, "replaced".into()))
                            .await;
                });
            }
            tracing::info!("reconnected to RabbitMQ");
        }
        Ok(link.clone())
    }

    async fn channel(&self) -> Result<Channel, BrokerError> {
        Ok(self.link().await?.conn.create_channel().await?)
    }

    /// Declares every exchange and queue; safe to call from every process that starts.
    pub async fn declare_topology(&self) -> Result<(), BrokerError> {
        let ch = self.channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let t = &self.shared.topology;
        ch.exchange_declare(
            t.events_exchange().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            t.dead_letter_exchange().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for role in Role::ALL {
            ch.queue_declare(
                t.dead_letter_queue(role).into(),
                durable_queue,
                quorum_args(None),
            )
            .await?;
            ch.queue_bind(
                t.dead_letter_queue(role).into(),
                t.dead_letter_exchange().into(),
                t.queue(role).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
            ch.queue_declare(
                t.queue(role).into(),
                durable_queue,
                quorum_args(Some((t, role))),
            )
            .await?;
        }
        let _ = ch.close(200, "topology declared".into()).await;
        Ok(())
    }

    /// Deletes the namespace's queues and exchanges, messages included: for throwaway
    /// namespaces such as a test's.
    pub async fn delete_topology(&self) -> Result<(), BrokerError> {
        let ch = self.channel().await?;
        let t = &self.shared.topology;
        for role in Role::ALL {
            for q in [t.queue(role), t.dead_letter_queue(role)] {
                ch.queue_delete(q.into(), QueueDeleteOptions::default())
                    .await?;
            }
        }
        for x in [t.events_exchange(), t.dead_letter_exchange()] {
            ch.exchange_delete(x.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        let _ = ch.close(200, "topology deleted".into()).await;
        Ok(())
    }

    pub fn topology(&self) -> &Topology {
        &self.shared.topology
    }

    /// Publishes tasks to their roles' queues and waits until the broker has taken
    /// every one; all confirms are awaited together so a batch costs one round trip.
    pub async fn publish_tasks(&self, tasks: &[Envelope<Task>]) -> Result<(), BrokerError> {
        let link = self.link().await?;
        link.confirmed(async {
            let mut pending = Vec::with_capacity(tasks.len());
            for env in tasks {
                let payload = env.encode()?;
                let confirm = link
                    .publisher
                    .basic_publish(
                        "".into(),
                        self.shared.topology.queue(env.body.role()).into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &payload,
                        persistent(&env.id),
                    )
                    .await?;
                pending.push((env.id.as_str(), confirm));
            }
            for (id, confirm) in pending {
                check_confirm(id, confirm.await?)?;
            }
            Ok(())
        })
        .await?;
        for env in tasks {
            let queue = self.shared.topology.queue(env.body.role());
            metrics::counter!(PUBLISHED, "queue" => queue).increment(1);
        }
        Ok(())
    }

    /// Publishes bytes as they are to a queue, e.g. to replay a dead letter once the
    /// cause is fixed.
    pub async fn publish_raw(&self, queue: &str, payload: &[u8]) -> Result<(), BrokerError> {
        let props = BasicProperties::default().with_delivery_mode(DELIVERY_MODE_PERSISTENT);
        self.publish_one("", queue, payload, props).await
    }

    /// One mandatory, confirmed publish; `routing` also names the message in errors.
    async fn publish_one(
        &self,
        exchange: &str,
        routing: &str,
        payload: &[u8],
        props: BasicProperties,
    ) -> Result<(), BrokerError> {
        let link = self.link().await?;
        link.confirmed(async {
            let confirm = link
                .publisher
                .basic_publish(
                    exchange.into(),
                    routing.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    payload,
                    props,
                )
                .await?;
            check_confirm(routing, confirm.await?)
        })
        .await
    }

    /// Publishes events to the fanout exchange, all confirms awaited together.
    pub async fn publish_events(&self, events: &[Envelope<Event>]) -> Result<(), BrokerError> {
        let link = self.link().await?;
        link.confirmed(async {
            let mut pending = Vec::with_capacity(events.len());
            for event in events {
                let confirm = link
                    .publisher
                    .basic_publish(
                        self.shared.topology.events_exchange().into(),
                        "".into(),
                        BasicPublishOptions::default(),
                        &event.encode()?,
                        persistent(&event.id),
                    )
                    .await?;
                pending.push((event.id.as_str(), confirm));
            }
            for (id, confirm) in pending {
                if let Confirmation::Nack(_) = confirm.await? {
                    return Err(BrokerError::Nacked(id.to_owned()));
                }
            }
            Ok(())
        })
        .await
    }

    /// Subscribes to the events exchange: a queue of this subscriber's own (named by
    /// the broker, gone with the channel), deliveries acked as they arrive. Events are
    /// for watching: one published while no subscription stood is not seen.
    pub async fn events(&self) -> Result<EventStream, BrokerError> {
        let ch = self.channel().await?;
        let queue = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let name = queue.name().as_str().to_owned();
        ch.queue_bind(
            name.as_str().into(),
            self.shared.topology.events_exchange().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let stream = ch
            .basic_consume(
                name.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(EventStream {
            stream,
            _channel: ch,
        })
    }

    /// Consumes any queue of the namespace, e.g. a dead-letter queue to inspect it.
    pub async fn consume_queue(
        &self,
        queue: &str,
        prefetch: u16,
    ) -> Result<AmqpConsumer, BrokerError> {
        let (stream, channel, subscription) = self.subscribe(queue, prefetch).await?;
        Ok(AmqpConsumer {
            stream,
            channel,
            subscription,
            broker: self.clone(),
            role: None,
            queue: queue.to_owned(),
            prefetch,
        })
    }

    async fn subscribe(
        &self,
        queue: &str,
        prefetch: u16,
    ) -> Result<(lapin::Consumer, Channel, u64), BrokerError> {
        let link = self.link().await?;
        let out = bounded("subscribing", async {
            let ch = link.conn.create_channel().await?;
            // Quorum queues refuse global QoS; this prefetch applies per consumer.
            ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
            let tag = format!("{}-{queue}", self.shared.name);
            let stream = ch
                .basic_consume(
                    queue.into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok((stream, ch, SUBSCRIPTIONS.fetch_add(1, Ordering::Relaxed)))
        })
        .await;
        if matches!(out, Err(BrokerError::TimedOut { .. })) {
            // The broker may have registered the consumer on a channel now dropped:
            // only closing the connection gets back what it would hold.
            link.stalled.store(true, Ordering::SeqCst);
        }
        out
    }

    /// Number of ready messages in a queue. Uses a throwaway channel because a passive
    /// declare of a missing queue closes the channel it runs on.
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, BrokerError> {
        Ok(self.declare_passive(queue).await?.0)
    }

    /// A queue's ready messages and consumers, by a passive declare on a throwaway
    /// channel.
    pub(super) async fn declare_passive(&self, queue: &str) -> Result<(u32, u32), BrokerError> {
        let ch = self.channel().await?;
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let _ = ch.close(200, "depth read".into()).await;
        Ok((q.message_count(), q.consumer_count()))
    }

    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let link = self.shared.link.lock().await.clone();
        let _ = link.conn.close(200, "bye".into()).await;
    }
}

impl Broker for AmqpBroker {
    type Consumer = AmqpConsumer;

    async fn declare(&self) -> Result<(), BrokerError> {
        self.declare_topology().await
    }

    async fn publish(&self, tasks: &[Envelope<Task>]) -> Result<(), BrokerError> {
        self.publish_tasks(tasks).await
    }

    async fn publish_events(&self, events: &[Envelope<Event>]) -> Result<(), BrokerError> {
        AmqpBroker::publish_events(self, events).await
    }

    async fn consume(&self, role: Role, prefetch: u16) -> Result<AmqpConsumer, BrokerError> {
        let mut consumer = self
            .consume_queue(&self.shared.topology.queue(role), prefetch)
            .await?;
        consumer.role = Some(role);
        Ok(consumer)
    }
}

impl AmqpConsumer {
    /// Stops new deliveries while the ones taken stay unsettled: a message requeued
    /// after this stays in the queue instead of coming straight back to this consumer.
    pub async fn cancel(&self) -> Result<(), BrokerError> {
        bounded("cancelling a consumer", async {
            let tag = self.stream.tag();
            Ok(self
                .channel
                .basic_cancel(tag, BasicCancelOptions::default())
                .await?)
        })
        .await
    }

    /// Closes its channel and waits for the broker's answer, which comes after every
    /// settlement sent before it: once this returns, requeued messages are back in
    /// their queue for any reader.
    pub async fn close(self) -> Result<(), BrokerError> {
        bounded("closing a consumer", async {
            Ok(self.channel.close(200, "done".into()).await?)
        })
        .await
    }
}

impl Consumer for AmqpConsumer {
    type Delivery = AmqpDelivery;

    /// The next delivery. When the channel is lost (a broker restart, a dropped
    /// connection) it subscribes again, backing off up to 5 s, and goes on: it ends only
    /// after `AmqpBroker::close`.
    async fn next(&mut self) -> Option<Result<AmqpDelivery, BrokerError>> {
        loop {
            match self.stream.next().await {
                Some(Ok(inner)) => {
                    let redelivered = if inner.redelivered { "true" } else { "false" };
                    metrics::counter!(CONSUMED, "queue" => self.queue.clone(), "redelivered" => redelivered)
                        .increment(1);
                    return Some(Ok(AmqpDelivery {
                        inner,
                        broker: self.broker.clone(),
                        role: self.role,
                        subscription: self.subscription,
                    }));
                }
                Some(Err(err)) => {
                    tracing::warn!(queue = %self.queue, %err, "consumer lost its channel")
                }
                None => {}
            }
            let mut wait = Duration::from_millis(100);
            loop {
                if self.broker.shared.closed.load(Ordering::SeqCst) {
                    return None;
                }
                tokio::time::sleep(wait).await;
                match self.broker.subscribe(&self.queue, self.prefetch).await {
                    Ok((stream, channel, subscription)) => {
                        self.stream = stream;
                        self.channel = channel;
                        self.subscription = subscription;
                        tracing::info!(queue = %self.queue, "consuming again");
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(queue = %self.queue, %err, "cannot consume yet; retrying");
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    }
}

impl Delivery for AmqpDelivery {
    fn data(&self) -> &[u8] {
        &self.inner.data
    }

    fn redelivered(&self) -> bool {
        self.inner.redelivered
    }

    /// Quorum queues count returned deliveries in `x-delivery-count`.
    fn attempt(&self) -> u32 {
        let returned = self
            .inner
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-delivery-count").cloned());
        let returned = match returned {
            Some(AMQPValue::LongLongInt(n)) => u32::try_from(n).unwrap_or(u32::MAX),
            Some(AMQPValue::LongInt(n)) => u32::try_from(n).unwrap_or(u32::MAX),
            Some(AMQPValue::LongUInt(n)) => n,
            Some(AMQPValue::ShortInt(n)) => u32::try_from(n).unwrap_or(0),
            _ => u32::from(self.inner.redelivered),
        };
        returned.saturating_add(1)
    }

    async fn ack(&self) -> Result<(), BrokerError> {
        if self.inner.ack(BasicAckOptions::default()).await? {
            self.count(ACKED, 1);
        }
        Ok(())
    }

    /// One frame per subscription the batch came on: `multiple` on its highest
    /// delivery tag acks that delivery and every earlier one of the channel. A consumer
    /// takes batches in delivery order, so the earlier ones are this batch's or already
    /// settled. A batch holds deliveries of two subscriptions when its consumer lost
    /// its channel and subscribed again: tags start again at 1 on the new channel, so
    /// the highest tag of the whole batch may be a lost channel's, whose ack settles
    /// nothing (lapin answers it without error), and acking only that one would leave
    /// the new channel's deliveries unacked for as long as it lives.
    async fn ack_all(deliveries: Vec<Self>) -> Result<(), BrokerError> {
        let mut last: BTreeMap<u64, &AmqpDelivery> = BTreeMap::new();
        for d in &deliveries {
            let entry = last.entry(d.subscription).or_insert(d);
            if d.inner.delivery_tag > entry.inner.delivery_tag {
                *entry = d;
            }
        }
        let mut result = Ok(());
        for d in last.values() {
            // A lost channel's deliveries are back in the queue already; the others
            // are still acked when one subscription's ack fails.
            match d.inner.ack(BasicAckOptions { multiple: true }).await {
                Ok(true) => {
                    let n = deliveries
                        .iter()
                        .filter(|o| o.subscription == d.subscription);
                    d.count(ACKED, n.count() as u64);
                }
                Ok(false) => {}
                Err(err) => result = Err(err.into()),
            }
        }
        result
    }

    /// Its channel is gone: the broker has requeued it, and settling it does nothing.
    fn lost(&self) -> bool {
        self.inner.acker.poisoned()
    }

    async fn requeue(&self) -> Result<(), BrokerError> {
        let requeued = self
            .inner
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await?;
        if requeued {
            self.count(REQUEUED, 1);
        }
        Ok(())
    }

    /// Republishes the message to the dead-letter exchange with `reason` in its
    /// headers, then acks it: a plain reject could not carry the reason.
    async fn dead_letter(&self, reason: &str) -> Result<(), BrokerError> {
        let broker = &self.broker;
        let mut headers = self.inner.properties.headers().clone().unwrap_or_default();
        headers.insert(
            HEADER_ERROR.into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        headers.insert(
            HEADER_REJECTED_BY.into(),
            AMQPValue::LongString(LongString::from(broker.shared.name.as_str())),
        );
        // The original properties (message id, content type) travel with the copy.
        let props = self
            .inner
            .properties
            .clone()
            .with_delivery_mode(DELIVERY_MODE_PERSISTENT)
            .with_headers(headers);
        // A delivery from a role's queue goes to that role's dead-letter queue; one
        // from elsewhere (a dead-letter queue itself) back where it came from.
        let routing = match self.role {
            Some(role) => broker.shared.topology.queue(role),
            None => self.inner.routing_key.to_string(),
        };
        broker
            .publish_one(
                &broker.shared.topology.dead_letter_exchange(),
                &routing,
                &self.inner.data,
                props,
            )
            .await?;
        self.count(DEAD_LETTERED, 1);
        // Settled, not "acked" in the counters' sense: its effect was never applied.
        self.inner.ack(BasicAckOptions::default()).await?;
        Ok(())
    }
}

impl AmqpDelivery {
    /// Adds `n` to a per-queue counter, labelled with the queue it came from.
    fn count(&self, name: &'static str, n: u64) {
        let queue = match self.role {
            Some(role) => self.broker.shared.topology.queue(role),
            None => self.inner.routing_key.to_string(),
        };
        metrics::counter!(name, "queue" => queue).increment(n);
    }

    /// The reason header of a dead-lettered message.
    pub fn error_header(&self) -> Option<String> {
        header_string(&self.inner.properties, HEADER_ERROR)
    }

    /// A string header, e.g. `HEADER_REJECTED_BY`.
    pub fn header(&self, name: &str) -> Option<String> {
        header_string(&self.inner.properties, name)
    }

    /// Publishes this message as it is to `queue` (a dead letter back to work): its
    /// properties go with it, less the dead-letter reason and the delivery count, so
    /// it starts afresh.
    pub async fn republish(&self, queue: &str) -> Result<(), BrokerError> {
        let mut kept = FieldTable::default();
        for (k, v) in self
            .inner
            .properties
            .headers()
            .iter()
            .flat_map(|h| h.inner())
        {
            if ![HEADER_ERROR, HEADER_REJECTED_BY, "x-delivery-count"].contains(&k.as_str()) {
                kept.insert(k.clone(), v.clone());
            }
        }
        let props = self
            .inner
            .properties
            .clone()
            .with_delivery_mode(DELIVERY_MODE_PERSISTENT)
            .with_headers(kept);
        self.broker
            .publish_one("", queue, &self.inner.data, props)
            .await
    }

    /// The message id it was published with (the task id).
    pub fn message_id(&self) -> Option<String> {
        self.inner
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
    }
}

fn header_string(props: &BasicProperties, name: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn quorum_args(dead_letter_for: Option<(&Topology, Role)>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some((t, role)) = dead_letter_for {
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(t.dead_letter_exchange().into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(t.queue(role).into()),
        );
        // RabbitMQ before 4.0 has no default limit: a message that crashes every
        // worker would otherwise circulate forever.
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(DELIVERY_LIMIT as i32),
        );
    }
    args
}

fn persistent(id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(DELIVERY_MODE_PERSISTENT)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(id))
}

fn check_confirm(id: &str, confirmation: Confirmation) -> Result<(), BrokerError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(BrokerError::Unroutable(id.to_owned())),
        Confirmation::Nack(_) => Err(BrokerError::Nacked(id.to_owned())),
        Confirmation::NotRequested => Err(BrokerError::Unconfirmed(id.to_owned())),
    }
}

/// Events as they are published (`AmqpBroker::events`).
pub struct EventStream {
    stream: lapin::Consumer,
    _channel: Channel,
}

impl EventStream {
    /// The next event; `None` once the subscription is gone (the connection was lost:
    /// subscribe again). Messages that are not events are skipped.
    pub async fn next(&mut self) -> Option<Envelope<Event>> {
        loop {
            let delivery = self.stream.next().await?.ok()?;
            match Envelope::<Event>::decode(&delivery.data) {
                Ok(event) => return Some(event),
                Err(e) => tracing::debug!(error = %e, "skipping a message that is not an event"),
            }
        }
    }
}

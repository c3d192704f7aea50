//! The in-process broker of embedded mode: the same delivery semantics as RabbitMQ
//! (prefetch, redelivery of what was not acked, a delivery limit, dead letters with a
//! reason) without a server.
use super::{Broker, BrokerError, Consumer, Delivery};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, Notify};
use tsst_messages::{Envelope, Event, Role, Task, DELIVERY_LIMIT};

#[derive(Clone)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

struct Shared {
    queues: Mutex<HashMap<Role, Queue>>,
    /// Woken whenever a message becomes ready or a delivery is settled.
    ready: Notify,
    events: broadcast::Sender<Envelope<Event>>,
    /// Tasks published so far (what a broker's publish rate counts).
    published: AtomicUsize,
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Message>,
    dead: Vec<(Vec<u8>, String)>,
}

struct Message {
    data: Vec<u8>,
    deliveries: u32,
}

pub struct MemoryConsumer {
    broker: MemoryBroker,
    role: Role,
    prefetch: usize,
    unsettled: Arc<AtomicUsize>,
}

pub struct MemoryDelivery {
    broker: MemoryBroker,
    role: Role,
    data: Vec<u8>,
    deliveries: u32,
    settled: AtomicBool,
    unsettled: Arc<AtomicUsize>,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBroker {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        MemoryBroker {
            shared: Arc::new(Shared {
                queues: Mutex::new(HashMap::new()),
                ready: Notify::new(),
                events,
                published: AtomicUsize::new(0),
            }),
        }
    }

    fn queues(&self) -> MutexGuard<'_, HashMap<Role, Queue>> {
        self.shared.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, role: Role, data: Vec<u8>, deliveries: u32) {
        self.queues()
            .entry(role)
            .or_default()
            .ready
            .push_back(Message { data, deliveries });
        self.shared.ready.notify_waiters();
    }

    /// Events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Envelope<Event>> {
        self.shared.events.subscribe()
    }

    /// Tasks published so far, to every role.
    pub fn published(&self) -> usize {
        self.shared.published.load(Ordering::SeqCst)
    }

    /// Ready messages of a role's queue.
    pub fn depth(&self, role: Role) -> usize {
        self.queues().get(&role).map_or(0, |q| q.ready.len())
    }

    /// The dead letters of a role, with their reasons.
    pub fn dead_letters(&self, role: Role) -> Vec<(Vec<u8>, String)> {
        self.queues()
            .get(&role)
            .map_or_else(Vec::new, |q| q.dead.clone())
    }

    /// Puts raw bytes on a role's queue, as a foreign producer might.
    pub fn publish_raw(&self, role: Role, data: Vec<u8>) {
        self.push(role, data, 0);
    }
}

impl Broker for MemoryBroker {
    type Consumer = MemoryConsumer;

    async fn declare(&self) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn publish(&self, tasks: &[Envelope<Task>]) -> Result<(), BrokerError> {
        let encoded = tasks
            .iter()
            .map(|t| Ok((t.body.role(), t.encode()?)))
            .collect::<Result<Vec<_>, BrokerError>>()?;
        self.shared
            .published
            .fetch_add(encoded.len(), Ordering::SeqCst);
        for (role, data) in encoded {
            self.push(role, data, 0);
        }
        Ok(())
    }

    async fn publish_events(&self, events: &[Envelope<Event>]) -> Result<(), BrokerError> {
        for event in events {
            // No subscriber is not an error: events are for whoever watches.
            let _ = self.shared.events.send(event.clone());
        }
        Ok(())
    }

    async fn consume(&self, role: Role, prefetch: u16) -> Result<MemoryConsumer, BrokerError> {
        Ok(MemoryConsumer {
            broker: self.clone(),
            role,
            prefetch: usize::from(prefetch.max(1)),
            unsettled: Arc::new(AtomicUsize::new(0)),
        })
    }
}

impl Consumer for MemoryConsumer {
    type Delivery = MemoryDelivery;

    async fn next(&mut self) -> Option<Result<MemoryDelivery, BrokerError>> {
        loop {
            // Register for a wake-up before looking, so a publish between the look and
            // the wait is not missed.
            let notified = self.broker.shared.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.unsettled.load(Ordering::SeqCst) < self.prefetch {
                let mut queues = self.broker.queues();
                let queue = queues.entry(self.role).or_default();
                while let Some(mut m) = queue.ready.pop_front() {
                    m.deliveries += 1;
                    // RabbitMQ's x-delivery-limit: a message that keeps coming back
                    // (a worker crashing on it) is set aside.
                    if m.deliveries > DELIVERY_LIMIT + 1 {
                        queue.dead.push((m.data, "delivery limit exceeded".into()));
                        continue;
                    }
                    self.unsettled.fetch_add(1, Ordering::SeqCst);
                    return Some(Ok(MemoryDelivery {
                        broker: self.broker.clone(),
                        role: self.role,
                        data: m.data,
                        deliveries: m.deliveries,
                        settled: AtomicBool::new(false),
                        unsettled: self.unsettled.clone(),
                    }));
                }
            }
            notified.await;
        }
    }
}

impl MemoryDelivery {
    /// Marks the delivery settled; false if it was already.
    fn settle(&self) -> bool {
        let first = !self.settled.swap(true, Ordering::SeqCst);
        if first {
            self.unsettled.fetch_sub(1, Ordering::SeqCst);
            self.broker.shared.ready.notify_waiters();
        }
        first
    }
}

impl Delivery for MemoryDelivery {
    fn data(&self) -> &[u8] {
        &self.data
    }

    fn redelivered(&self) -> bool {
        self.deliveries > 1
    }

    fn attempt(&self) -> u32 {
        self.deliveries
    }

    async fn ack(&self) -> Result<(), BrokerError> {
        self.settle();
        Ok(())
    }

    async fn requeue(&self) -> Result<(), BrokerError> {
        if self.settle() {
            self.broker
                .push(self.role, self.data.clone(), self.deliveries);
        }
        Ok(())
    }

    async fn dead_letter(&self, reason: &str) -> Result<(), BrokerError> {
        if self.settle() {
            self.broker
                .queues()
                .entry(self.role)
                .or_default()
                .dead
                .push((self.data.clone(), reason.to_owned()));
        }
        Ok(())
    }
}

impl Drop for MemoryDelivery {
    /// Like a closed channel: what was not settled goes back to the queue.
    fn drop(&mut self) {
        if self.settle() {
            self.broker
                .push(self.role, std::mem::take(&mut self.data), self.deliveries);
        }
    }
}

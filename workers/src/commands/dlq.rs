//! `tsst dlq`: the dead-letter queues, listed and replayed. A dead letter keeps its
//! payload and properties, plus why it was rejected and by which worker.
use crate::cli::{DlqCommand, ServiceArgs};
use anyhow::{Context as _, Result};
use std::time::Duration;
use tsst_actors::broker::{AmqpBroker, AmqpDelivery, Consumer, Delivery};
use tsst_messages::{Envelope, Role, Task, HEADER_REJECTED_BY};

pub async fn dlq(command: DlqCommand, services: &ServiceArgs) -> Result<()> {
    let d = services.require("dlq", "tsst-dlq").await?;
    let (roles, run, replay) = match &command {
        DlqCommand::List { role } => (roles(*role), None, false),
        DlqCommand::Replay { role, run } => (roles(*role), run.as_deref(), true),
    };
    let mut total = (0, 0);
    for role in roles {
        let (seen, replayed) = one_queue(&d.broker, role, run, replay).await?;
        total.0 += seen;
        total.1 += replayed;
    }
    if replay {
        println!("replayed {} of {} dead letters", total.1, total.0);
    } else {
        println!("{} dead letters", total.0);
    }
    d.broker.close().await;
    Ok(())
}

fn roles(role: Option<Role>) -> Vec<Role> {
    role.map_or_else(
        || {
            Role::ALL
                .into_iter()
                .filter(|r| *r != Role::Trainer)
                .collect()
        },
        |r| vec![r],
    )
}

/// Takes every message of one role's dead-letter queue, prints it, and settles it:
/// replayed ones go back to the role's queue and leave this one; the rest return.
async fn one_queue(
    broker: &AmqpBroker,
    role: Role,
    run: Option<&str>,
    replay: bool,
) -> Result<(usize, usize)> {
    let t = broker.topology().clone();
    let dlq = t.dead_letter_queue(role);
    let depth = broker
        .queue_depth(&dlq)
        .await
        .context("reading the queue")?;
    if depth == 0 {
        return Ok((0, 0));
    }
    // Every message is held unsettled until the end, so none comes round twice.
    let held = depth.min(u32::from(u16::MAX));
    let mut consumer = broker.consume_queue(&dlq, held as u16).await?;
    let mut taken: Vec<AmqpDelivery> = Vec::new();
    while taken.len() < held as usize {
        match tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
            Ok(Some(Ok(d))) => taken.push(d),
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) | Err(_) => break,
        }
    }
    // Nothing more comes, so a message requeued below stays in the queue instead of
    // being delivered straight back here.
    consumer.cancel().await?;
    println!("{role}: {} dead letters", taken.len());
    let mut replayed = 0;
    for d in &taken {
        let (task_run, question) = match Envelope::<Task>::decode(d.data()) {
            Ok(env) => names(&env.body),
            Err(_) => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "  {}\trun {task_run}\tquestion {question}\tby {}\t{}",
            d.message_id().unwrap_or_else(|| "-".into()),
            d.header(HEADER_REJECTED_BY).unwrap_or_else(|| "-".into()),
            d.error_header()
                .unwrap_or_else(|| "no reason recorded".into())
        );
        if replay && run.is_none_or(|r| r == task_run) {
            d.republish(&t.queue(role)).await?;
            d.ack().await?;
            replayed += 1;
        } else {
            d.requeue().await?;
        }
    }
    // Answered after every settlement above: the requeued are back for any reader
    // when the command exits.
    consumer.close().await?;
    Ok((taken.len(), replayed))
}

fn names(task: &Task) -> (String, String) {
    match task {
        Task::Expand(t) => (t.run.clone(), t.question.clone()),
        Task::Score(t) => (t.run.clone(), t.question.clone()),
        Task::Verify(t) => (t.run.clone(), t.question.clone()),
        Task::Label(t) => (t.run.clone(), t.question.clone()),
        Task::Probe(_) => ("-".to_owned(), "-".to_owned()),
        Task::Train(t) => (t.run.clone(), "-".to_owned()),
    }
}

//! The worker's model cache: at most `limit` models of a kind stay loaded; switching
//! to a new one unloads the least recently used once its batches are answered, and
//! never fails a batch in flight.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tsst_actors::runtime::{ExpandJob, ModelFactory, Models, ScriptedFactory};
use tsst_backend::{BackendError, ExpandRequest, PolicyBackend, PolicyOutput, ValueBackend};
use tsst_messages::{DataSource, Question};

/// The scripted backends, counting how many are loaded now and how many loads there were.
#[derive(Clone, Default)]
struct Counting {
    live: Arc<AtomicUsize>,
    loads: Arc<AtomicUsize>,
}

struct Tracked {
    inner: Box<dyn PolicyBackend>,
    live: Arc<AtomicUsize>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PolicyBackend for Tracked {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn expand(&mut self, batch: &[ExpandRequest<'_>]) -> Result<Vec<PolicyOutput>, BackendError> {
        self.inner.expand(batch)
    }
}

impl ModelFactory for Counting {
    fn policy(&self, name: &str) -> Result<Box<dyn PolicyBackend>, BackendError> {
        let inner = ScriptedFactory.policy(name)?;
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.live.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(Tracked {
            inner,
            live: self.live.clone(),
        }))
    }
    fn value(&self, name: &str) -> Result<Box<dyn ValueBackend>, BackendError> {
        ScriptedFactory.value(name)
    }
}

fn job() -> Vec<ExpandJob> {
    vec![ExpandJob {
        question: Arc::new(Question {
            id: "q".into(),
            source: DataSource::Aokvqa,
            image: None,
            question: "How many?".into(),
            choices: vec!["1".into(), "2".into()],
            answer: 0,
            rationales: Vec::new(),
            context: None,
        }),
        prefix: String::new(),
        seeds: vec![1, 2],
        temperature: 0.7,
        max_new_tokens: 16,
        delimiter: None,
    }]
}

#[actix_rt::test]
async fn a_new_model_unloads_the_least_recent_once_its_batch_is_answered() {
    let counting = Counting::default();
    let models = Arc::new(Models::new(counting.clone()).with_limit(1));
    let slow = {
        let models = models.clone();
        tokio::spawn(async move { models.expand("scripted:400ms", job()).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The switch: the slow model is unloaded from the cache while its batch runs.
    let fast = models.expand("scripted:1ms", job()).await;
    assert!(fast.is_ok(), "{fast:?}");
    assert_eq!(models.loaded().0, ["scripted:1ms"]);
    let slow = slow.await.unwrap();
    assert!(slow.is_ok(), "the batch in flight failed: {slow:?}");
    let mut waited = 0;
    while counting.live.load(Ordering::SeqCst) != 1 && waited < 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    assert_eq!(
        counting.live.load(Ordering::SeqCst),
        1,
        "the unloaded model was not dropped"
    );
    // Asked for again, it is loaded again.
    models.expand("scripted:400ms", job()).await.unwrap();
    assert_eq!(counting.loads.load(Ordering::SeqCst), 3);
    assert_eq!(models.loaded().0, ["scripted:400ms"]);
}

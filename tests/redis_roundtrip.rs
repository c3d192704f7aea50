//! Round trips through the real Redis: run registration is idempotent and refuses a
//! conflicting re-registration.
use tsst_actors::store::{RedisStore, StoreError};
use tsst_messages::{DataSource, Question};

fn redis_url() -> String {
    std::env::var("TSST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn question(i: usize) -> Question {
    Question {
        id: format!("q{i}"),
        source: DataSource::Aokvqa,
        image: Some(format!("val2017/{i:012}.jpg").into()),
        question: format!("How many red circles are there? ({i})"),
        choices: vec!["1".into(), "2".into(), "3".into(), "4".into()],
        answer: i % 4,
        rationales: vec!["Step 1: count.".into()],
        context: None,
    }
}

#[tokio::test]
async fn runs_register_once_and_read_back_in_order() {
    let store = RedisStore::connect(&redis_url())
        .await
        .expect("Redis must be running (see .ci/run)");
    let run = format!("test-register-{}", std::process::id());
    let questions: Vec<Question> = (0..25).map(question).collect();

    assert!(store
        .register_run(&run, "{\"seed\":1}", &questions)
        .await
        .unwrap());
    // Re-enqueueing the same run is a no-op, not a duplicate.
    assert!(!store
        .register_run(&run, "{\"seed\":1}", &questions)
        .await
        .unwrap());
    assert_eq!(store.questions(&run).await.unwrap(), questions);
    assert_eq!(store.question(&run, "q7").await.unwrap(), questions[7]);
    assert_eq!(store.run_config(&run).await.unwrap(), "{\"seed\":1}");
    assert!(store.runs().await.unwrap().contains(&run));

    let err = store
        .register_run(&run, "{\"seed\":2}", &questions)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { what: "config", .. }),
        "{err}"
    );
    assert!(matches!(
        store.run_config("no-such-run").await,
        Err(StoreError::UnknownRun(_))
    ));

    let mut conn = store.connection();
    let keys = tsst_messages::keys::RunKeys::new(&run);
    let _: () = redis::cmd("DEL")
        .arg(keys.meta())
        .arg(keys.questions())
        .arg(keys.order())
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SREM")
        .arg(tsst_messages::keys::runs())
        .arg(&run)
        .query_async(&mut conn)
        .await
        .unwrap();
}

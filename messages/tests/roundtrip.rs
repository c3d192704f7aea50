use std::path::PathBuf;
use tsst_messages::*;

fn node(n: u64) -> NodeId {
    NodeId(n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn all_tasks() -> Vec<Task> {
    vec![
        Task::Expand(ExpandTask {
            run: "r1".into(),
            question: "q-7".into(),
            round: 3,
            node: node(1),
        }),
        Task::Score(ScoreTask {
            run: "r1".into(),
            question: "q-7".into(),
            round: 3,
            parent: node(1),
            children: vec![node(2), node(3), NodeId(u64::MAX)],
            steps: vec![ChildStep {
                sample: 1,
                step: "Step 2: \"quoted\" — and ünïcode.".into(),
                logprob: -0.1 - 0.2,
                tokens: 7,
                eos: true,
            }],
        }),
        Task::Verify(VerifyTask {
            run: "r1".into(),
            question: "q-7".into(),
        }),
        Task::Label(LabelTask {
            run: "r1".into(),
            question: "q-7".into(),
        }),
        Task::Train(TrainTask {
            run: "r1".into(),
            round: 2,
            policy_data: PathBuf::from("out/dplus.json"),
            value_data: PathBuf::from("out/dv.json"),
        }),
    ]
}

fn all_events() -> Vec<Event> {
    vec![
        Event::RunStarted {
            run: "r".into(),
            questions: 200,
        },
        Event::QuestionSearched {
            run: "r".into(),
            question: "q".into(),
            rounds: 4,
            solutions: 5,
        },
        Event::QuestionDone {
            run: "r".into(),
            question: "q".into(),
        },
        Event::QuestionFailed {
            run: "r".into(),
            question: "q".into(),
            reason: "image unreadable".into(),
        },
        Event::RunFinished {
            run: "r".into(),
            questions: 200,
            failed: 1,
        },
        Event::ModelPublished {
            model: ModelKind::Value,
            name: "value-r1".into(),
            version: 2,
            path: PathBuf::from("models/value-r1"),
        },
    ]
}

#[test]
fn every_task_round_trips() {
    for task in all_tasks() {
        let env = task.clone().envelope();
        assert_eq!(env.schema, SCHEMA_VERSION);
        let bytes = env.encode().unwrap();
        let back = Envelope::<Task>::decode(&bytes).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.id, task.id());
    }
}

#[test]
fn every_event_round_trips() {
    for event in all_events() {
        let env = event.envelope();
        let back = Envelope::<Event>::decode(&env.encode().unwrap()).unwrap();
        assert_eq!(back, env);
    }
}

#[test]
fn nodes_and_questions_round_trip() {
    let mut n = Node::root(NodeId::root("r", "q"));
    n.value = Some(0.25);
    n.finished = Some(FinishReason::Answer);
    let back: Node = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
    assert_eq!(back, n);

    let q = Question {
        id: "abc".into(),
        source: DataSource::Scienceqa,
        image: None,
        question: "Which is a mammal?".into(),
        choices: vec!["frog".into(), "whale".into()],
        answer: 1,
        rationales: vec![],
        context: Some("hint".into()),
    };
    let back: Question = serde_json::from_str(&serde_json::to_string(&q).unwrap()).unwrap();
    assert_eq!(back, q);
    assert_eq!(back.answer_letter(), 'B');
}

#[test]
fn task_ids_are_deterministic_and_distinct() {
    let ids: Vec<String> = all_tasks().iter().map(Task::id).collect();
    let again: Vec<String> = all_tasks().iter().map(Task::id).collect();
    assert_eq!(ids, again);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
}

#[test]
fn node_ids_depend_on_every_part() {
    let root = NodeId::root("run", "q1");
    assert_eq!(root, NodeId::root("run", "q1"));
    assert_ne!(root, NodeId::root("run", "q2"));
    assert_ne!(root, NodeId::root("run2", "q1"));
    let a = NodeId::child("run", "q1", root, 0, 0);
    assert_eq!(a, NodeId::child("run", "q1", root, 0, 0));
    assert_ne!(a, NodeId::child("run", "q1", root, 0, 1));
    assert_ne!(a, NodeId::child("run", "q1", root, 1, 0));
    assert_ne!(a, NodeId::child("run", "q1", a, 0, 0));
    // Parts are length-prefixed: moving a byte between parts changes the hash.
    assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
    assert_eq!(a.to_string().parse::<NodeId>().unwrap(), a);
}

#[test]
fn unknown_version_is_a_typed_error() {
    let mut value = serde_json::to_value(all_tasks()[0].clone().envelope()).unwrap();
    value["schema"] = serde_json::json!(SCHEMA_VERSION + 1);
    let err = Envelope::<Task>::decode(value.to_string().as_bytes()).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::UnsupportedVersion { found, supported }
            if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION
    ));
    assert!(err.to_string().contains("not supported"));
}

#[test]
fn malformed_payloads_are_typed_errors() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty"),
        (b"\xff\xfe", "not utf-8"),
        (b"[1,2,3]", "array"),
        (b"{\"id\":\"x\",\"body\":{}}", "no version"),
        (b"{\"schema\":1,\"id\":\"x\"}", "no body"),
        (
            b"{\"schema\":1,\"id\":\"x\",\"body\":{\"kind\":\"explode\"}}",
            "unknown kind",
        ),
        (
            b"{\"schema\":1,\"id\":\"x\",\"body\":{\"kind\":\"expand\",\"run\":\"r\",\"question\":\"q\",\"round\":-1,\"node\":\"0000000000000001\"}}",
            "negative round",
        ),
        (
            b"{\"schema\":1,\"id\":\"x\",\"body\":{\"kind\":\"expand\",\"run\":\"r\",\"question\":\"q\",\"round\":1,\"node\":\"zz\"}}",
            "bad node id",
        ),
        (b"{\"schema\":\"1\"}", "version as string"),
    ];
    for (bytes, what) in cases {
        let result = Envelope::<Task>::decode(bytes);
        assert!(result.is_err(), "{what} decoded: {result:?}");
    }
    assert!(matches!(
        Envelope::<Task>::decode(b"{\"id\":\"x\"}"),
        Err(DecodeError::MissingVersion)
    ));
}

#[test]
fn tree_keys_share_one_hash_tag() {
    let k = keys::TreeKeys::new("run-1", "q/7");
    let tag = |key: String| {
        let start = key.find('{').unwrap();
        let end = key[start..].find('}').unwrap() + start;
        key[start + 1..end].to_owned()
    };
    let all = [
        k.nodes(),
        k.state(),
        k.frontier(3),
        k.barrier(3),
        k.finished(),
        k.verdicts(),
        k.outbox(),
        k.values(),
        k.reasons(),
        k.children(2),
    ];
    for key in all {
        assert_eq!(tag(key), "run-1/q/7");
    }
}

#[test]
fn roles_name_their_queues() {
    for role in Role::ALL {
        assert_eq!(role.name().parse::<Role>().unwrap(), role);
        let t = Topology::default();
        assert!(t.queue(role).starts_with("tsst."));
        assert!(t.dead_letter_queue(role).starts_with(&t.queue(role)));
        assert_ne!(Topology::new("other").queue(role), t.queue(role));
    }
    assert!("painter".parse::<Role>().is_err());
}

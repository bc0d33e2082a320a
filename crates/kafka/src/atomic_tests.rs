//! Tests of the atomic publisher: group commits, a refused request, the spare committers.

use super::*;
use rdkafka::mocking::MockCluster;

fn job(
    topic: &str,
    sizes: &[usize],
) -> (
    Job,
    oneshot::Receiver<Result<Vec<Written>, AtomicPublishError>>,
) {
    let (done, answer) = oneshot::channel();
    let messages = sizes
        .iter()
        .enumerate()
        .map(|(i, size)| Prepared {
            topic: topic.into(),
            key: format!("key-{i}").into(),
            payload: vec![b'x'; *size],
            headers: OwnedHeaders::new(),
        })
        .collect();
    (Job { messages, done }, answer)
}

#[tokio::test]
async fn queueing_requests_wait_for_more_to_share_their_commit_and_a_lone_one_does_not() {
    let window = Duration::from_millis(500);
    let (queue_in, mut queue) = mpsc::channel(8);
    let (lone, _answer) = job("events", &[1]);
    let started = std::time::Instant::now();
    let group = gather(&mut queue, lone, window).await;
    assert_eq!(group.len(), 1);
    assert!(started.elapsed() < window / 2, "a lone request waited");

    let (first, _a1) = job("events", &[1]);
    let (queued, _a2) = job("events", &[1]);
    queue_in.send(queued).await.unwrap();
    let late = queue_in.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (arriving, _a3) = job("events", &[1]);
        late.send(arriving).await.unwrap();
    });
    let group = gather(&mut queue, first, window).await;
    // The request arriving 20 ms later joined the queued ones' transaction.
    assert_eq!(group.len(), 3);
}

#[tokio::test]
async fn a_spare_committer_takes_only_a_backlog_and_ends_when_shutdown_finds_none() {
    let (queue_in, queue) = mpsc::channel(16);
    let queue: Queue = Arc::new(tokio::sync::Mutex::new(queue));
    let backlog = Arc::new(Notify::new());
    let spare = Take::Backlog(backlog.clone());
    let finishing = CancellationToken::new();
    let mut answers = Vec::new();
    let mut queue_jobs = async |n: usize| {
        for _ in 0..n {
            let (j, answer) = job("events", &[1]);
            queue_in.send(j).await.unwrap();
            answers.push(answer);
        }
    };

    // Fewer than a backlog: woken, the spare leaves them to the first committer.
    queue_jobs(SPARE_AFTER - 1).await;
    backlog.notify_one();
    let spared = tokio::time::timeout(
        Duration::from_millis(300),
        next_group(&queue, &spare, &finishing),
    )
    .await;
    assert!(
        spared.is_err(),
        "a spare took requests that were no backlog"
    );
    let group = next_group(&queue, &Take::Every, &finishing).await.unwrap();
    assert_eq!(group.len(), SPARE_AFTER - 1);

    // A backlog: the spare takes it whole.
    queue_jobs(SPARE_AFTER).await;
    backlog.notify_one();
    let group = tokio::time::timeout(
        Duration::from_secs(5),
        next_group(&queue, &spare, &finishing),
    )
    .await
    .expect("the spare took the backlog")
    .unwrap();
    assert_eq!(group.len(), SPARE_AFTER);

    // Shutting down with nothing queued: the spare ends (the first committer answers
    // whatever still comes).
    finishing.cancel();
    let ended = tokio::time::timeout(
        Duration::from_secs(5),
        next_group(&queue, &spare, &finishing),
    )
    .await
    .expect("the spare ended");
    assert!(ended.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_kafka_refuses_fails_alone_in_a_shared_transaction() {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic("events", 3, 3).unwrap();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("transactional.id", "atomic-test")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // The producer itself refuses anything larger.
        .set("message.max.bytes", "10000");
    let (queue_in, queue) = mpsc::channel(8);
    let queue: Queue = Arc::new(tokio::sync::Mutex::new(queue));
    // Queued before the committer starts, so that all three share the first transaction.
    let (good_1, answer_1) = job("events", &[10, 20, 30]);
    let (bad, answer_bad) = job("events", &[10, 50_000]);
    let (good_2, answer_2) = job("events", &[40]);
    for j in [good_1, bad, good_2] {
        queue_in.send(j).await.unwrap();
    }
    drop(queue_in);
    let ready: Arc<[AtomicBool]> = Arc::new([AtomicBool::new(false)]);
    tokio::time::timeout(
        Duration::from_secs(60),
        commit_loop(
            config,
            queue,
            Readiness {
                all: ready.clone(),
                n: 0,
            },
            CancellationToken::new(),
            Take::Every,
        ),
    )
    .await
    .expect("the committer ends once its senders are gone");

    assert_eq!(answer_1.await.unwrap().unwrap().len(), 3);
    assert_eq!(answer_2.await.unwrap().unwrap().len(), 1);
    let refused = answer_bad.await.unwrap().unwrap_err();
    assert!(
        matches!(refused, AtomicPublishError::Aborted(ref reason) if reason.contains("events")),
        "{refused}"
    );
    assert!(ready[0].load(Ordering::Relaxed));
}

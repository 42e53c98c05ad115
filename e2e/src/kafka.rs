//! A Kafka topic owned by one test, and small rdkafka helpers.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use crate::stack::Stack;

/// A test's own topic; dropped means deleted.
pub struct TestTopic {
    pub name: String,
    bootstrap: String,
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("kafka admin client")
}

impl TestTopic {
    /// Creates `<prefix>-<random>` with one partition.
    pub async fn create(stack: &Stack, prefix: &str) -> TestTopic {
        let name = format!("{prefix}-{}", crate::unique_suffix());
        let admin = admin(&stack.kafka_bootstrap);
        let topic = NewTopic::new(&name, 1, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics([&topic], &opts)
            .await
            .expect("create_topics request");
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
        TestTopic {
            name,
            bootstrap: stack.kafka_bootstrap.clone(),
        }
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        let admin = admin(&self.bootstrap);
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        // The admin client polls on its own thread, so blocking here is fine.
        let _ = futures::executor::block_on(admin.delete_topics(&[&self.name], &opts));
    }
}

/// A consumer config reading `topic` from the beginning, without a group commit.
pub fn consumer_config(stack: &Stack) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &stack.kafka_bootstrap)
        .set("group.id", format!("e2e-{}", crate::unique_suffix()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    cfg
}

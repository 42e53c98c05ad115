//! The bench's topics: one per monitor, made with LogAppendTime (a beat's
//! broker time is the time the operator judges by) and removed at the end.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

pub fn create_topics(bootstrap: &str, topics: &[String]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("kafka admin client");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            NewTopic::new(t, 1, TopicReplication::Fixed(1))
                .set("message.timestamp.type", "LogAppendTime")
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
    for chunk in new.chunks(50) {
        let results = futures::executor::block_on(admin.create_topics(chunk, &opts))
            .expect("create_topics request");
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
    }
}

pub fn delete_topics(bootstrap: &str, topics: &[String]) {
    let Ok(admin) = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let _ = futures::executor::block_on(admin.delete_topics(&names, &opts));
}

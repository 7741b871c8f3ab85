"""The `make demo` driver: produce events, then show what the ingesters wrote (run by demo.sh)."""
import json
import sys
import time

EVENTS = ["page_view", "click", "add_to_cart", "purchase"]


def produce(bootstrap, topic, count):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    start_ms = int(time.time() * 1000) - 2 * 86_400_000
    for i in range(count):
        event = {"id": i, "user": f"user-{i % 97}", "event": EVENTS[i % 4],
                 "amount": round((i % 50) * 1.25, 2), "ts": start_ms + i * (2 * 86_400_000 // count)}
        producer.produce(topic, key=event["user"], value=json.dumps(event))
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(30)
    print(f"produced {count} JSON events to topic {topic} (3 partitions)")


def show(uri, opts, topic, count, deadline_s):
    import polars as pl
    from deltalake import DeltaTable

    started = time.time()
    while True:
        try:
            dt = DeltaTable(uri, storage_options=opts)
            rows = dt.count() if hasattr(dt, "count") else len(dt.to_pyarrow_table(columns=["id"]))
            if rows >= count:
                break
        except Exception:
            rows = 0
        if time.time() - started > deadline_s:
            sys.exit(f"the table has {rows} of {count} rows after {deadline_s} s")
        time.sleep(1)
    print(f"\nthe table at {uri} holds {rows} rows after {time.time() - started:.1f} s, table version {dt.version()}")
    print("partition columns:", dt.metadata().partition_columns)
    print("sync points (txn versions = next offset per partition):",
          {p: dt.transaction_version(f"kafkatable-{topic}-{p}") for p in range(3)})
    df = pl.read_delta(uri, storage_options=opts)
    print("\nread with polars: events per type and day")
    print(df.group_by("event", "ts_day").agg(pl.len().alias("rows"), pl.col("amount").sum()).sort("ts_day", "event"))
    print(df.select("id", "user", "event", "ts_day", "_kafka_partition", "_kafka_offset").head(3))


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        uri, endpoint, key, secret, topic, count = sys.argv[2:8]
        opts = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
        show(uri, opts, topic, int(count), 120)

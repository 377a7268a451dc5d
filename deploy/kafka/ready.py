"""Exit 0 when the Kafka broker on 127.0.0.1:PORT answers a real client's metadata request and
the cluster has at least MIN_BROKERS brokers (default 1); used by deploy/kafka.sh and
deploy/kafka-cluster.sh.   usage: ready.py PORT [MIN_BROKERS]"""

import asyncio
import sys

from aiokafka.admin import AIOKafkaAdminClient


async def main(port: str, min_brokers: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=3000)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        if len(cluster["brokers"]) < min_brokers:
            raise SystemExit(1)
    finally:
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1))

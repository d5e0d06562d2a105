"""The notifier consuming the interventions topic on the embedded broker (Tansu)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from atmguard.core.settings import Settings
from atmguard.notifier.service import NotifierService

from .conftest import CONFIGS, make_iv

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


async def test_interventions_on_the_topic_are_sent_once(sink, deployment, tmp_path: Path):
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from atmguard.kafka.broker import EmbeddedBroker

    settings = Settings(twilio_base_url=sink.base_url, public_url="http://127.0.0.1:9", config_dir=CONFIGS, partitions=2)
    with EmbeddedBroker() as broker:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(settings.topic_interventions, num_partitions=2, replication_factor=1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        ivs = [make_iv(i, sms=("dispatch",), atm_id=f"atm-zhez-00{i}") for i in range(1, 4)]
        try:
            # published before the notifier is up: nothing accepted is lost
            await producer.send_and_wait(settings.topic_interventions, ivs[0].to_json().encode(), key=b"atm-zhez-001")
            service = NotifierService(settings, deployment, f"sqlite:///{tmp_path / 'n.db'}", tick_s=0.1)
            await service.start(broker.bootstrap)
            try:
                await service.wait_ready(30)
                await producer.send_and_wait(settings.topic_interventions, b"{not an intervention", key=b"x")
                for iv in [*ivs[1:], ivs[0], ivs[1]]:  # two redeliveries
                    await producer.send_and_wait(settings.topic_interventions, iv.to_json().encode(), key=iv.atm_id.encode())
                await asyncio.to_thread(sink.wait_for, 3, timeout=20)
                await asyncio.sleep(0.5)
                assert sorted(r.body.split(" ", 2)[1] for r in sink.messages if r.body) == ["14:30"] * 3
                assert len(sink.messages) == 3
                assert {iv.id for iv in ivs} == {
                    (r.body or "").rsplit("/", 1)[-1] for r in sink.messages
                }
            finally:
                await service.stop()
        finally:
            await producer.stop()

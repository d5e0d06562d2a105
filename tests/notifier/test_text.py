"""What officers read and hear: templates in ru/kk/en, segment budgets, masking, replies."""

from __future__ import annotations

import logging
import re
from zoneinfo import ZoneInfo

from atmguard.notifier.acks import AckReply, parse_reply
from atmguard.notifier.masking import mask_phone, mask_text
from atmguard.notifier.messages import render_sms, render_voice, twiml
from atmguard.notifier.segments import encoding, fit, segments, units

from .conftest import make_iv

TZ = ZoneInfo("Asia/Almaty")


def test_gsm7_and_ucs2_segment_arithmetic():
    assert encoding("OK K7QD") == "GSM-7" and encoding("Принято") == "UCS-2"
    assert segments("a" * 160) == 1 and segments("a" * 161) == 2 and segments("a" * 306) == 2 and segments("a" * 307) == 3
    assert units("€") == 2 and segments("€" * 80) == 1 and segments("€" * 81) == 2  # extension chars take two septets
    assert segments("б" * 70) == 1 and segments("б" * 71) == 2 and segments("б" * 134) == 2
    assert segments("a" * 159 + "б") == 3  # one Cyrillic letter makes the whole message UCS-2


def test_fit_trims_optional_text_at_word_boundaries_and_keeps_essentials():
    optional = "Говорит по телефону четыре минуты, оглядывался семь раз, под угрозой четыреста тысяч тенге наличными"

    def render(details: str) -> str:
        return f"ATMGUARD ул. Абая, 41. {details} Принять: OK K7QD http://x/console/interventions/iv-1".replace("  ", " ")

    assert segments(render("")) == 2  # the essentials alone need two UCS-2 segments
    text = fit(render, optional, 2)
    assert segments(text) == 2 and segments(render(optional)) > 2
    assert text.startswith("ATMGUARD ул. Абая, 41.") and text.endswith("Принять: OK K7QD http://x/console/interventions/iv-1")
    kept = text.removeprefix("ATMGUARD ул. Абая, 41. ").split(" Принять:")[0]
    assert kept.endswith("…")
    words = kept.rstrip("…").split()
    source = optional.split()[: len(words)]
    # whole words only, never cut mid-word (trailing punctuation before the ellipsis is dropped)
    assert words and words[:-1] == source[:-1] and words[-1] == source[-1].rstrip(",;:.-")
    # Nothing to trim when it fits; essentials alone too long -> essentials only, never cut
    assert fit(render, "коротко", 3) == render("коротко")
    assert fit(lambda d: "x" * 200 + d, "more words", 1) == "x" * 200


def test_sms_in_russian_kazakh_and_english(deployment):
    iv = make_iv()
    atm = deployment.atm(iv.atm_id)
    link = f"https://guard.example/console/interventions/{iv.id}"
    texts = {
        lang: render_sms(iv, atm, lang, public_url="https://guard.example", tz=TZ, max_segments=6) for lang in ("ru", "kk", "en")
    }
    for text in texts.values():
        assert "пр. Алашахана, 30" in text and "14:30" in text and link in text
        assert f"OK {iv.short_code}" in text and "400 000 KZT" in text
    assert "Говорит по телефону 4 мин 10 с, оглядывался 7 раз" in texts["ru"] and "Принять: ответьте" in texts["ru"]
    assert "4 мин 10 сек бойы телефонмен сөйлесіп тұр, 7 рет жан-жағына қарады" in texts["kk"] and "Қабылдау" in texts["kk"]
    assert "On the phone 4 min 10 s, looked around 7 times" in texts["en"] and "Reply OK" in texts["en"]
    assert "400 000 KZT at stake" in texts["en"] and "Под угрозой 400 000 KZT" in texts["ru"]


def test_sms_stays_within_budget_by_trimming_details_not_the_code_or_link(deployment):
    from atmguard.notifier.messages import details_text

    iv = make_iv()
    atm = deployment.atm(iv.atm_id)
    text = render_sms(iv, atm, "ru", public_url="http://127.0.0.1:8080", tz=TZ, max_segments=3)
    assert segments(text) <= 3 < segments(render_sms(iv, atm, "ru", public_url="http://127.0.0.1:8080", tz=TZ, max_segments=9))
    assert f"OK {iv.short_code}" in text and text.endswith(f"/console/interventions/{iv.id}")
    full = details_text(iv, atm, "ru").split()
    kept = text.split("30. ", 1)[1].split("…")[0].split()
    assert kept == full[: len(kept)]  # a prefix of whole words: the facts first, then place and message
    assert "Говорит по телефону 4 мин 10 с" in text


def test_radio_twiml_speaks_the_message_twice_with_channel_voice(deployment):
    iv = make_iv()
    channel = deployment.radio["dispatch"]
    text = render_voice(iv, deployment.atm(iv.atm_id), channel.text_language)
    assert text.startswith("Внимание всем постам.") and "пр. Алашахана, 30" in text
    assert "http" not in text and ", ".join(iv.short_code) in text  # no link on radio; code letter by letter
    xml = twiml(text, language=channel.language, voice=channel.voice, repeat=2)
    says = re.findall(r'<Say language="ru-RU" voice="Polly.Tatyana">(.*?)</Say>', xml)
    assert len(says) == 2 and says[0] == says[1] and "<Pause" in xml


def test_phone_numbers_are_masked(caplog):
    assert mask_phone("+77015554567") == "+7701***4567"
    assert mask_text("call +77015554567 or +77102000911") == "call +7701***4567 or +7710***0911"
    assert mask_phone(None) == "***" and mask_phone("+7701") == "***"


def test_ack_replies_in_latin_and_cyrillic():
    assert parse_reply("OK K7QD") == AckReply("K7QD")
    assert parse_reply("1 k7qd") == AckReply("K7QD")
    assert parse_reply("ОК К7ОD") == AckReply("K7OD")  # typed on a Russian keyboard
    assert parse_reply("ok") == AckReply(None)
    assert parse_reply("where is it?") is None and parse_reply("OK K7QDX") is None


def test_logs_never_show_full_numbers(caplog, deployment):
    caplog.set_level(logging.DEBUG)
    from atmguard.notifier.routing import plan

    iv = make_iv()
    plan(iv, deployment, iv.actions, when=iv.ts, public_url="http://x")
    assert "+77015550101" not in caplog.text

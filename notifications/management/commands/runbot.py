import asyncio
import logging

from django.core.management.base import BaseCommand, CommandError

from notifications import bot, telegram

logger = logging.getLogger("notifications.bot")


class Command(BaseCommand):
    help = "Run the Telegram bot (long polling). Needs TELEGRAM_BOT_TOKEN."

    def handle(self, *args, **options) -> None:
        if not telegram.is_configured():
            raise CommandError("TELEGRAM_BOT_TOKEN is not set: there is no bot to run.")
        logger.info("bot: starting (long polling)")
        asyncio.run(bot.run_until_stopped())

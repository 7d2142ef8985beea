from django.db import migrations
from django.db.models import Max


def backfill(apps, schema_editor):
    Message = apps.get_model("messaging", "Message")
    DeliveryCursor = apps.get_model("messaging", "DeliveryCursor")
    newest: dict[int, int] = {}
    for field in ("sender_id", "recipient_id"):
        for row in Message.objects.values(field).annotate(newest=Max("id")):
            newest[row[field]] = max(newest.get(row[field], 0), row["newest"])
    DeliveryCursor.objects.bulk_create(
        [DeliveryCursor(user_id=user_id, last_message_id=last) for user_id, last in newest.items()],
        batch_size=1000,
    )


class Migration(migrations.Migration):
    dependencies = [("messaging", "0002_delivery_cursor")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from accounts.models import User
from notifications.models import Notification, TelegramLink


@admin.register(TelegramLink)
class TelegramLinkAdmin(admin.ModelAdmin):
    list_display = ("user", "linked", "chat_id", "muted", "linked_at", "updated_at")
    list_filter = ("muted", ("chat_id", admin.EmptyFieldListFilter))
    search_fields = ("user__username",)
    readonly_fields = ("user", "chat_id", "linked_at", "updated_at")
    fields = ("user", "chat_id", "linked_at", "muted", "updated_at")

    @admin.display(boolean=True, description="linked")
    def linked(self, link: TelegramLink) -> bool:
        return link.is_linked

    def has_add_permission(self, request) -> bool:
        # A link is made by the user through the bot, never typed in.
        return False


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "recipient", "sender", "message_count", "status", "attempts", "sent_at")
    list_filter = ("status", "created_at")
    search_fields = ("recipient__username", "sender__username")
    list_select_related = ("recipient", "sender")
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in Notification._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class TelegramLinkInline(admin.StackedInline):
    """On each user's admin page: the Telegram link state and recent notifications."""

    model = TelegramLink
    can_delete = False
    extra = 0
    max_num = 0
    verbose_name = verbose_name_plural = "Telegram"
    fields = ("chat_id", "linked_at", "muted", "recent_notifications")
    readonly_fields = ("chat_id", "linked_at", "recent_notifications")

    @admin.display(description="recent notifications")
    def recent_notifications(self, link: TelegramLink) -> str:
        recent = Notification.objects.filter(recipient_id=link.user_id).select_related("sender")[:10]
        rows = format_html_join(
            "",
            "<li>{} · {} message(s) from {} · {}</li>",
            ((n.created_at.strftime("%Y-%m-%d %H:%M"), n.message_count, n.sender.username, n.status) for n in recent),
        )
        return format_html("<ul>{}</ul>", rows) if recent else "none"


# notifications builds on accounts, so it adds itself to the user admin rather than
# accounts knowing about it.
_user_admin = admin.site._registry.get(User)
if _user_admin is not None and TelegramLinkInline not in _user_admin.inlines:
    _user_admin.inlines = [*_user_admin.inlines, TelegramLinkInline]

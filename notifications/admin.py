from django.contrib import admin

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

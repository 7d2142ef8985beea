from django.contrib import admin

from messaging.models import Conversation, Membership, Message


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("id", "created_at", "sender", "recipient", "body", "client_id")
    readonly_fields = fields
    ordering = ("-id",)
    extra = 0
    can_delete = False
    show_change_link = True
    max_num = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("sender", "recipient")


class MembershipInline(admin.TabularInline):
    model = Membership
    fk_name = "conversation"
    fields = ("user", "peer", "last_read_id")
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("id", "user_low", "user_high", "created_at", "last_message_id")
    list_select_related = ("user_low", "user_high")
    search_fields = ("user_low__username", "user_high__username")
    list_filter = (("created_at", admin.DateFieldListFilter),)
    readonly_fields = ("user_low", "user_high", "created_at", "last_message")
    inlines = [MembershipInline, MessageInline]
    date_hierarchy = "created_at"


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "sender", "recipient", "short_body")
    list_select_related = ("sender", "recipient")
    search_fields = ("body", "sender__username", "recipient__username")
    list_filter = (("created_at", admin.DateFieldListFilter),)
    date_hierarchy = "created_at"
    readonly_fields = ("conversation", "sender", "recipient", "created_at", "client_id")
    raw_id_fields = ("conversation",)
    ordering = ("-id",)
    show_full_result_count = False

    @admin.display(description="body")
    def short_body(self, message: Message) -> str:
        return message.body if len(message.body) <= 80 else message.body[:79] + "…"

    def has_add_permission(self, request) -> bool:
        return False  # messages are sent through the app, which delivers them

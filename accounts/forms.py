from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.core.exceptions import ValidationError

from accounts.models import User
from accounts.services import user_create


class RegisterForm(UserCreationForm):
    email = forms.EmailField(required=False, help_text="Optional.")

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")

    def save(self, commit: bool = True) -> User:
        try:
            return user_create(
                username=self.cleaned_data["username"],
                password=self.cleaned_data["password1"],
                email=self.cleaned_data.get("email") or "",
            )
        except ValidationError as exc:
            # Lost a race with another registration of the same name.
            for field, messages in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, messages)
            raise

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from accounts.models import User
from accounts.services import user_create
from accounts.throttling import ThrottledFormMixin


class LoginForm(ThrottledFormMixin, AuthenticationForm):
    """The login page's form; its submissions count with the token endpoint's."""

    throttle_scope = "login"


class AdminLoginForm(ThrottledFormMixin, AdminAuthenticationForm):
    """The admin's login form; its submissions count with every other login's."""

    throttle_scope = "login"


class RegisterForm(ThrottledFormMixin, UserCreationForm):
    throttle_scope = "register"
    email = forms.EmailField(required=False, help_text="Optional.")

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")

    def __init__(self, *args, request: HttpRequest, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.request = request

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

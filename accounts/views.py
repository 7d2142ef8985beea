from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.response import TemplateResponse
from django.views.decorators.http import require_http_methods

from accounts import presence
from accounts.forms import LoginForm, RegisterForm
from accounts.selectors import user_list
from accounts.throttling import throttled_status


class LoginView(auth_views.LoginView):
    """Django's login page; too many submissions from one address answer 429 with
    the form again (`accounts.throttling`)."""

    authentication_form = LoginForm
    redirect_authenticated_user = True

    def form_invalid(self, form: LoginForm) -> HttpResponse:
        return throttled_status(super().form_invalid(form))


@require_http_methods(["GET", "POST"])
def register(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("home")
    form = RegisterForm(request.POST if request.method == "POST" else None, request=request)
    if request.method == "POST" and form.is_valid():
        try:
            user = form.save()
        except ValidationError:
            pass
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("home")
    return throttled_status(TemplateResponse(request, "accounts/register.html", {"form": form}))


@login_required
def users(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "")
    page = Paginator(user_list(viewer=request.user, search=search), 50).get_page(request.GET.get("page"))
    online_ids = presence.online_user_ids(u.pk for u in page)
    return render(request, "accounts/users.html", {"page": page, "search": search, "online_ids": online_ids})

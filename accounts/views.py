from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts import presence
from accounts.forms import RegisterForm
from accounts.selectors import user_list


@require_http_methods(["GET", "POST"])
def register(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("home")
    form = RegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = form.save()
        except ValidationError:
            pass
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("home")
    return render(request, "accounts/register.html", {"form": form})


@login_required
def users(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "")
    page = Paginator(user_list(viewer=request.user, search=search), 50).get_page(request.GET.get("page"))
    online_ids = presence.online_user_ids(u.pk for u in page)
    return render(request, "accounts/users.html", {"page": page, "search": search, "online_ids": online_ids})

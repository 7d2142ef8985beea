"""Browser pages of messaging. They only frame the page: the conversations and the
history come from the REST API and the socket, read by the scripts in `static/js/`."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from accounts.selectors import user_get_active


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "messaging/home.html")


@login_required
def chat(request: HttpRequest, username: str) -> HttpResponse:
    peer = user_get_active(username=username)
    if peer is None:
        raise Http404("No such user")
    if peer.pk == request.user.pk:
        return redirect("home")
    return render(request, "messaging/chat.html", {"peer": peer})

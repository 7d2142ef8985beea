from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "messaging/home.html")


@login_required
def chat(request: HttpRequest, username: str) -> HttpResponse:
    return render(request, "messaging/chat.html", {"peer_username": username})

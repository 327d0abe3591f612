from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts import selectors


@login_required
def home(request: HttpRequest) -> HttpResponse:
    memberships = selectors.membership_list(user=request.user)  # type: ignore[arg-type]
    return render(request, "accounts/home.html", {"memberships": memberships})

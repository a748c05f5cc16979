//! Who is calling: OpenID Connect sign-in for the page, Entra access tokens for the API.

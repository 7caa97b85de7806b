// An OpenID Provider for the tests: oidc-provider (a certified implementation) on loopback, with its development login
// form (any password is accepted for a known login). Started by Infrastructure/OpenIdProvider.cs with:
//   PORT           the port to listen on (127.0.0.1)
//   CLIENT_ID, CLIENT_SECRET, REDIRECT_URIS, POST_LOGOUT_REDIRECT_URIS   the one client: Portcullis (space-separated URIs, one per server)
//   ACCOUNTS       a JSON file { "<login>": { "groups": [...] } }, read at every login so a test can change someone's groups
//   JWKS           a JSON file { "keys": [<private JWK>] }: the signing keys (a test restarts the provider with others)
import fs from 'node:fs';
import Provider from 'oidc-provider';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const port = Number(env('PORT'));
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: env('CLIENT_ID'),
    client_secret: env('CLIENT_SECRET'),
    redirect_uris: env('REDIRECT_URIS').split(' '),
    post_logout_redirect_uris: env('POST_LOGOUT_REDIRECT_URIS').split(' '),
    response_types: ['code'],
    grant_types: ['authorization_code'],
  }],
  jwks: JSON.parse(fs.readFileSync(env('JWKS'), 'utf8')),
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'groups'],
  claims: { openid: ['sub'], profile: ['preferred_username', 'name'], groups: ['groups'] },
  async findAccount(ctx, id) {
    const accounts = JSON.parse(fs.readFileSync(env('ACCOUNTS'), 'utf8'));
    if (!Object.hasOwn(accounts, id)) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, name: id, groups: accounts[id].groups ?? [] };
      },
    };
  },
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  cookies: { keys: ['portcullis-tests-only'] },
});
provider.proxy = false;

const server = provider.listen(port, '127.0.0.1', () => console.log(`listening on ${issuer}`));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

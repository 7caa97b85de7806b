using System.Net;
using System.Net.WebSockets;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Portcullis.Tests.Infrastructure;

/// <summary>
/// A service to put behind the gateway, in the test process on a free loopback port: it echoes what
/// it received (method, raw path, query, headers, body size), streams generated downloads, counts
/// uploads, answers slowly on request, and echoes WebSocket messages.
/// </summary>
public sealed class TestUpstream : IAsyncDisposable
{
    private readonly WebApplication _app;

    private TestUpstream(WebApplication app, Uri baseAddress)
    {
        _app = app;
        BaseAddress = baseAddress;
    }

    public Uri BaseAddress { get; }

    public string Url => BaseAddress.ToString().TrimEnd('/');

    public static async Task<TestUpstream> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(IPAddress.Loopback, 0);
            k.Limits.MaxRequestBodySize = null;
        });
        var app = builder.Build();
        app.UseWebSockets();
        app.Map("/echo/{**rest}", EchoAsync);
        // Anything else is echoed too, so that proxies in front need no path rewriting.
        app.MapFallback(EchoAsync);
        static async Task EchoAsync(HttpContext http)
        {
            long length = 0;
            var buffer = new byte[81920];
            int n;
            while ((n = await http.Request.Body.ReadAsync(buffer)) > 0)
                length += n;
            await http.Response.WriteAsJsonAsync(new
            {
                method = http.Request.Method,
                path = http.Features.Get<IHttpRequestFeature>()!.RawTarget.Split('?')[0],
                query = http.Request.QueryString.Value,
                headers = http.Request.Headers.ToDictionary(h => h.Key.ToLowerInvariant(), h => h.Value.ToString()),
                body_length = length,
            });
        }
        app.MapGet("/download", async (HttpContext http, long bytes) =>
        {
            http.Response.ContentType = "application/octet-stream";
            http.Response.ContentLength = bytes;
            var chunk = new byte[64 * 1024];
            Random.Shared.NextBytes(chunk);
            for (long sent = 0; sent < bytes; sent += chunk.Length)
                await http.Response.Body.WriteAsync(chunk.AsMemory(0, (int)Math.Min(chunk.Length, bytes - sent)));
        });
        app.MapPost("/upload", async (HttpContext http) =>
        {
            long length = 0;
            var buffer = new byte[81920];
            int n;
            while ((n = await http.Request.Body.ReadAsync(buffer)) > 0)
                length += n;
            return Results.Text(length.ToString());
        });
        app.MapGet("/slow", async (int ms) =>
        {
            await Task.Delay(ms);
            return Results.Text("finally");
        });
        app.MapGet("/status/{code:int}", (int code) => Results.StatusCode(code));
        // A hostile page: tries to act as the person in Portcullis's origin, and reports what worked.
        app.MapGet("/evil", () => Results.Content(EvilPage, "text/html; charset=utf-8"));
        // Tries to set Portcullis's cookies, in every spelling, beside one of its own.
        app.MapGet("/cookies", (HttpContext http) =>
        {
            foreach (var name in new[] { "portcullis", "__Host-portcullis", "portcullis-service", "Portcullis-Antiforgery", "__Secure-portcullis-state", ".AspNetCore.Antiforgery.x" })
                http.Response.Headers.Append("Set-Cookie", $"{name}=planted; path=/");
            http.Response.Headers.Append("Set-Cookie", "theirs=kept; path=/");
            return Results.Text("cookies");
        });
        app.Map("/ws", async (HttpContext http) =>
        {
            if (!http.WebSockets.IsWebSocketRequest)
            {
                http.Response.StatusCode = 400;
                return;
            }
            using var socket = await http.WebSockets.AcceptWebSocketAsync();
            var buffer = new byte[4096];
            while (true)
            {
                var result = await socket.ReceiveAsync(buffer, CancellationToken.None);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None);
                    return;
                }
                await socket.SendAsync(buffer.AsMemory(0, result.Count), result.MessageType, result.EndOfMessage, CancellationToken.None);
            }
        });
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new TestUpstream(app, new Uri(address));
    }

    private const string EvilPage = """
        <!doctype html><title>running</title><pre id="out"></pre><script>
        (async () => {
          const ui = new URLSearchParams(location.search).get('ui');
          const r = {};
          async function attempt(key, f) { try { r[key] = await f(); } catch (e) { r[key] = 'blocked'; } }
          await attempt('readTokens', async () => (await (await fetch(ui + '/tokens', { credentials: 'include' })).text()).length > 0 ? 'read' : 'empty');
          await attempt('readRelative', async () => (await (await fetch('/tokens', { credentials: 'include' })).text()).length > 0 ? 'read' : 'empty');
          await attempt('createToken', async () => 'status ' + (await fetch(ui + '/api/v1/tokens', { method: 'POST', credentials: 'include',
            headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'stolen', scopes: ['api', 'admin'] }) })).status);
          await attempt('cookie', async () => { document.cookie = 'portcullis=planted; path=/'; return document.cookie.includes('portcullis=planted') ? 'set-here' : 'not-set'; });
          r.origin = String(self.origin);
          document.getElementById('out').textContent = JSON.stringify(r);
          document.title = 'done';
        })();
        </script>
        """;

    /// <summary>What <c>/echo</c> answered, parsed.</summary>
    public static async Task<JsonElement> EchoAsync(HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"expected the upstream's echo, got {(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

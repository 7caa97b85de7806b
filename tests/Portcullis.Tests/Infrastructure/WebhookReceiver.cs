using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Portcullis.Tests.Infrastructure;

/// <summary>
/// A webhook receiver in the test process: it checks each delivery's signature with the secret it is given, can fail the
/// first requests on purpose (503), and keeps what it accepted, by delivery id, so that a second delivery of one id shows.
/// </summary>
public sealed class WebhookReceiver : IAsyncDisposable
{
    private readonly WebApplication _app;
    private int _failuresLeft;

    private WebhookReceiver(WebApplication app, Uri baseAddress)
    {
        _app = app;
        Url = baseAddress.ToString().TrimEnd('/') + "/hook";
    }

    public string Url { get; }

    /// <summary>The signing secret; deliveries whose signature does not match it are answered 401 and not kept.</summary>
    public string Secret { get; set; } = "";

    /// <summary>Every request, accepted or not.</summary>
    public int Requests => _requests;
    private int _requests;

    public int BadSignatures => _badSignatures;
    private int _badSignatures;

    /// <summary>Accepted deliveries: (delivery id, event, body), in the order they came.</summary>
    public ConcurrentQueue<(string Id, string Event, JsonElement Body)> Accepted { get; } = new();

    public void FailNext(int count) => Interlocked.Exchange(ref _failuresLeft, count);

    public static async Task<WebhookReceiver> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        var app = builder.Build();
        WebhookReceiver? receiver = null;
        app.MapPost("/hook", async (HttpContext http) =>
        {
            Interlocked.Increment(ref receiver!._requests);
            using var buffer = new MemoryStream();
            await http.Request.Body.CopyToAsync(buffer);
            var body = buffer.ToArray();
            var expected = "sha256=" + Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(receiver.Secret), body));
            if (!CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(expected),
                    Encoding.ASCII.GetBytes(http.Request.Headers["X-Portcullis-Signature-256"].ToString())))
            {
                Interlocked.Increment(ref receiver._badSignatures);
                return Results.StatusCode(401);
            }
            if (Interlocked.Decrement(ref receiver._failuresLeft) >= 0)
                return Results.StatusCode(503);
            receiver.Accepted.Enqueue((http.Request.Headers["X-Portcullis-Delivery"].ToString(), http.Request.Headers["X-Portcullis-Event"].ToString(),
                JsonDocument.Parse(body).RootElement.Clone()));
            return Results.NoContent();
        });
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        receiver = new WebhookReceiver(app, new Uri(address));
        return receiver;
    }

    /// <summary>Waits until <paramref name="count"/> deliveries were accepted (or 15 s), then a little more for any duplicate.</summary>
    public async Task<List<(string Id, string Event, JsonElement Body)>> WaitForAsync(Func<(string Id, string Event, JsonElement Body), bool> match, int count)
    {
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (Accepted.Count(match) < count && DateTime.UtcNow < deadline)
            await Task.Delay(100);
        await Task.Delay(500);
        return [.. Accepted.Where(match)];
    }

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();
}

using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Portcullis.Tests.Infrastructure;

/// <summary>
/// An OTLP/HTTP collector in the test process: keeps every protobuf body posted to <c>/v1/traces</c>, <c>/v1/metrics</c>
/// and <c>/v1/logs</c>, and reads spans out of them with <see cref="Protobuf"/> (no generated classes needed for four fields).
/// </summary>
public sealed class OtlpReceiver : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentQueue<(string Path, byte[] Body)> _bodies = new();

    private OtlpReceiver(WebApplication app) => _app = app;

    public string Url { get; private set; } = "";

    public static async Task<OtlpReceiver> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        var app = builder.Build();
        var receiver = new OtlpReceiver(app);
        app.MapPost("/v1/{signal}", async (HttpContext http, string signal) =>
        {
            using var body = new MemoryStream();
            await http.Request.Body.CopyToAsync(body);
            receiver._bodies.Enqueue((signal, body.ToArray()));
            http.Response.ContentType = "application/x-protobuf";
        });
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        receiver.Url = address.TrimEnd('/');
        return receiver;
    }

    public IEnumerable<byte[]> Bodies(string signal) => _bodies.Where(b => b.Path == signal).Select(b => b.Body);

    /// <summary>A span as OTLP carries it (opentelemetry/proto/trace/v1/trace.proto): ids as hex, the name.</summary>
    public sealed record Span(string TraceId, string SpanId, string ParentSpanId, string Name);

    /// <summary>Every span received: ExportTraceServiceRequest.resource_spans(1) → scope_spans(2) → spans(2).</summary>
    public IReadOnlyList<Span> Spans() =>
        (from body in Bodies("traces")
         from resourceSpans in Protobuf.Fields(body, 1)
         from scopeSpans in Protobuf.Fields(resourceSpans, 2)
         from span in Protobuf.Fields(scopeSpans, 2)
         select new Span(Hex(span, 1), Hex(span, 2), Hex(span, 4), System.Text.Encoding.UTF8.GetString(Protobuf.Fields(span, 5).FirstOrDefault() ?? []))).ToList();

    private static string Hex(byte[] message, int field) => Convert.ToHexStringLower(Protobuf.Fields(message, field).FirstOrDefault() ?? []);

    public ValueTask DisposeAsync() => _app.DisposeAsync();

    /// <summary>Just enough of the protobuf wire format to pick length-delimited fields out of a message.</summary>
    private static class Protobuf
    {
        public static IEnumerable<byte[]> Fields(byte[] message, int wanted)
        {
            var found = new List<byte[]>();
            var i = 0;
            while (i < message.Length)
            {
                var key = Varint(message, ref i);
                var (field, wire) = ((int)(key >> 3), (int)(key & 7));
                switch (wire)
                {
                    case 0: Varint(message, ref i); break;
                    case 1: i += 8; break;
                    case 5: i += 4; break;
                    case 2:
                        var length = (int)Varint(message, ref i);
                        if (field == wanted)
                            found.Add(message[i..(i + length)]);
                        i += length;
                        break;
                    default: throw new InvalidDataException($"protobuf wire type {wire} at {i}");
                }
            }
            return found;
        }

        private static ulong Varint(byte[] data, ref int i)
        {
            ulong value = 0;
            for (var shift = 0; ; shift += 7)
            {
                var b = data[i++];
                value |= (ulong)(b & 0x7f) << shift;
                if (b < 0x80)
                    return value;
            }
        }
    }
}

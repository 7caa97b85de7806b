using System.Net;
using System.Net.Sockets;

namespace Portcullis.Tests.Infrastructure;

/// <summary>
/// Clients that connect from another loopback address (all of 127.0.0.0/8 is this machine), so that a proxy in front
/// of Portcullis sees a client address other than its own.
/// </summary>
public static class LoopbackSource
{
    public static HttpClient Client(string source, Uri baseAddress)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (context, cancellationToken) =>
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    socket.Bind(new IPEndPoint(IPAddress.Parse(source), 0));
                    await socket.ConnectAsync(context.DnsEndPoint, cancellationToken);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
        return new HttpClient(handler) { BaseAddress = baseAddress, Timeout = TimeSpan.FromSeconds(30) };
    }
}

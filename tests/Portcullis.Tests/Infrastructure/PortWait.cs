using System.Diagnostics;
using System.Net.Sockets;

namespace Portcullis.Tests.Infrastructure;

/// <summary>Waiting for a program the tests started to listen on its loopback port.</summary>
public static class PortWait
{
    public enum Outcome
    {
        Listening,
        Exited,
        TimedOut,
    }

    /// <summary>Tries to connect to <paramref name="port"/> every <paramref name="poll"/> until it works, the process ends, or <paramref name="timeout"/> passes.</summary>
    public static async Task<Outcome> ForListenerAsync(Process process, int port, TimeSpan timeout, TimeSpan poll)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (process.HasExited)
                return Outcome.Exited;
            try
            {
                using var client = new TcpClient();
                await client.ConnectAsync("127.0.0.1", port);
                return Outcome.Listening;
            }
            catch (SocketException)
            {
                await Task.Delay(poll);
            }
        }
        return Outcome.TimedOut;
    }
}

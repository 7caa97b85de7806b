using Microsoft.AspNetCore.Http.HttpResults;
using Portcullis.Auth;

namespace Portcullis.Services;

/// <summary><c>GET /api/v1/managed-services</c> (admin): the processes of docs/services.md and how they fare.</summary>
internal static class ManagedServicesApi
{
    public static RouteGroupBuilder MapManagedServices(this RouteGroupBuilder api)
    {
        var group = api.MapGroup("/managed-services").WithTags("Services").RequireAuthorization(Policies.Admin);
        group.MapGet("/", (ManagedProcesses processes) => TypedResults.Ok(processes.States));
        return group;
    }
}
